//! The naive dedup scheme the project's is compared with: one lightweight transaction
//! (`INSERT … IF NOT EXISTS`) per event, nothing in front of it, run on the same runtime and
//! the same input as the dedup stage, in this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use notify_runtime::dlq::ErrorClass;
use notify_runtime::records::RoutedNotification;
use notify_runtime::{
    CancellationToken, Config, Output, ProcessError, Processor, RecordMeta, RunSpec,
};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

pub struct NaiveLwt {
    session: Arc<Session>,
    insert: PreparedStatement,
    output: String,
}

impl NaiveLwt {
    pub async fn new(config: &Config, output: &str) -> anyhow::Result<NaiveLwt> {
        let session = notify_runtime::cql::connect(&config.cql).await?;
        let ks = &config.cql.keyspace;
        session
            .query_unpaged(
                format!("CREATE TABLE IF NOT EXISTS {ks}.bench_naive_dedup (event_id text PRIMARY KEY, at bigint)"),
                (),
            )
            .await?;
        let insert = session
            .prepare(format!(
                "INSERT INTO {ks}.bench_naive_dedup (event_id, at) VALUES (?, ?) IF NOT EXISTS USING TTL 86400"
            ))
            .await?;
        Ok(NaiveLwt {
            session: Arc::new(session),
            insert,
            output: output.to_string(),
        })
    }
}

impl Processor for NaiveLwt {
    type Input = RoutedNotification;

    async fn process(
        &self,
        input: RoutedNotification,
        meta: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        let id = input.request.event_id.clone();
        if id.is_empty() {
            return Err(ProcessError::reject(
                ErrorClass::Validation,
                "empty event_id",
            ));
        }
        let result = self
            .session
            .execute_unpaged(&self.insert, (&id, notify_runtime::now_ms()))
            .await
            .map_err(ProcessError::transient)?;
        let rows = result.into_rows_result().map_err(ProcessError::transient)?;
        let row: Option<Row> = rows
            .maybe_first_row::<Row>()
            .map_err(ProcessError::transient)?;
        match row.and_then(|r| r.columns.into_iter().next().flatten()) {
            Some(CqlValue::Boolean(true)) => {
                let key = meta
                    .key
                    .clone()
                    .unwrap_or_else(|| input.request.user_id.clone());
                Ok(vec![Output::record(&self.output, key, input)])
            }
            Some(CqlValue::Boolean(false)) => Ok(Vec::new()),
            other => Err(ProcessError::transient(format!(
                "unexpected LWT answer {other:?}"
            ))),
        }
    }
}

/// Runs the naive scheme over `input` until `records` are consumed and acknowledged (or `cap`
/// passes: then over what it did); returns records/s from the first record on.
pub async fn measure(
    config: Config,
    input: &str,
    output: &str,
    records: u64,
    cap: Duration,
) -> anyhow::Result<f64> {
    let processor = NaiveLwt::new(&config, output).await?;
    let token = CancellationToken::new();
    let spec = RunSpec {
        name: "naive_dedup".into(),
        input_topics: vec![input.to_string()],
    };
    let running = notify_runtime::start(processor, spec, config, token.clone()).await?;
    let deadline = Instant::now() + cap;
    let mut first: Option<Instant> = None;
    let outcome = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (consumed, in_flight) = progress(&running.metrics.render());
        if consumed > 0.0 && first.is_none() {
            first = Some(Instant::now());
        }
        if consumed >= records as f64 && in_flight == 0.0 {
            let secs = first
                .map(|f| f.elapsed().as_secs_f64())
                .unwrap_or(0.1)
                .max(0.1);
            break Ok(records as f64 / secs);
        }
        if Instant::now() > deadline {
            // Time cap: the rate over what it did, like a capped stage.
            let secs = first
                .map(|f| f.elapsed().as_secs_f64())
                .unwrap_or(0.1)
                .max(0.1);
            tracing::warn!(consumed, records, "naive dedup: time cap reached");
            break Ok((consumed - in_flight).max(0.0) / secs);
        }
    };
    token.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(40), running.done)
        .await
        .context("naive dedup did not stop")?;
    if let Ok(Err(e)) = stopped {
        bail!("naive dedup: {e}");
    }
    outcome
}

fn progress(metrics: &str) -> (f64, f64) {
    let mut consumed = 0.0;
    let mut in_flight = 0.0;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let v = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if line.starts_with("notify_naive_dedup_records_consumed_total") {
            consumed += v;
        } else if line.starts_with("notify_naive_dedup_in_flight_records") {
            in_flight = v;
        }
    }
    (consumed, in_flight)
}
