//! The naive scheme, for the benchmark's comparison only: one lightweight transaction
//! (`INSERT … IF NOT EXISTS`, a Paxos round) per event on the per-id table `dedup_ledger`,
//! nothing in front of it. Same inputs, outputs and statuses as the project's scheme.

use std::sync::Arc;

use notify_runtime::records::{DeliveryStatus, Outcome, RoutedNotification};
use notify_runtime::runner::RuntimeError;
use notify_runtime::{Config, Emit, Metrics, Output, ProcessError, RecordMeta, Stage};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

use crate::{NAME, Settings};

pub struct NaiveDedup {
    session: Arc<Session>,
    insert: PreparedStatement,
    output: String,
    status_topic: String,
    metrics: Metrics,
}

pub async fn build(
    config: &Config,
    metrics: &Metrics,
    shutdown: &notify_runtime::CancellationToken,
) -> Result<NaiveDedup, RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let session = crate::session(config, shutdown).await?;
    let insert = session
        .prepare(format!(
            "INSERT INTO {}.dedup_ledger (event_id, owner, claimed_at) VALUES (?, ?, toTimestamp(now())) \
             IF NOT EXISTS USING TTL {}",
            config.cql.keyspace, settings.window_secs
        ))
        .await
        .map_err(|e| RuntimeError::Setup(e.to_string()))?;
    Ok(NaiveDedup {
        session,
        insert,
        output: settings.output,
        status_topic: config.runtime.status_topic.clone(),
        metrics: metrics.clone(),
    })
}

impl Stage for NaiveDedup {
    type In = RoutedNotification;
    type Out = RoutedNotification;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn process(
        &self,
        routed: RoutedNotification,
        record: &RecordMeta,
    ) -> Result<Emit<RoutedNotification>, ProcessError> {
        self.metrics
            .cql_statements
            .with_label_values(&["lwt"])
            .inc();
        let key = format!("{}/{}", routed.request.user_id, routed.request.event_id);
        let mine = record.position();
        let row: Option<Row> = self
            .session
            .execute_unpaged(&self.insert, (&key, &mine))
            .await
            .map_err(ProcessError::transient)?
            .into_rows_result()
            .map_err(ProcessError::transient)?
            .maybe_first_row::<Row>()
            .map_err(ProcessError::transient)?;
        let columns = row.map(|r| r.columns).unwrap_or_default();
        let applied = matches!(columns.first(), Some(Some(CqlValue::Boolean(true))));
        let holder = columns.iter().flatten().find_map(|c| match c {
            CqlValue::Text(t) if t.contains('/') && *t != key => Some(t.clone()),
            _ => None,
        });
        let outcome = if applied || holder.as_deref() == Some(mine.as_str()) {
            Outcome::Accepted
        } else {
            Outcome::Duplicate
        };
        let status = Output::status(
            &self.status_topic,
            DeliveryStatus::of(&routed.request, NAME, outcome),
        );
        Ok(match outcome {
            Outcome::Accepted => Emit::next(routed).with_side(status),
            _ => Emit::end(vec![status]),
        })
    }

    fn output(&self, routed: RoutedNotification, _: &RecordMeta) -> Output {
        let user = routed.request.user_id.clone();
        Output::record(&self.output, user, routed)
    }
}
