//! Rate-limit state in CQL (`{keyspace}.ratelimit_sends`, migration 0003): one row per
//! accepted send, TTL = the scope's longest window, so nothing needs cleaning up. Sends are
//! written in batches with other records' (group commit): plain, idempotent writes by the
//! owner of the user's partition.

use std::sync::Arc;
use std::time::Duration;

use notify_runtime::Metrics;
use notify_runtime::cql::{BatchSettings, BatchWriter};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;

use crate::store::{RateStore, Sent, StoreError};

type Row = (String, String, String, CqlTimestamp, i32);

pub struct CqlStore {
    session: Arc<Session>,
    select: PreparedStatement,
    writer: BatchWriter<Row>,
    metrics: Metrics,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl CqlStore {
    /// Prepares the statements; each request is bounded by `timeout`, so a stalled database
    /// turns into a retry of the record, not a hang.
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Result<CqlStore, StoreError> {
        let mut select = session
            .prepare(format!(
                "SELECT event_id, sent_at FROM {keyspace}.ratelimit_sends WHERE user_id = ? AND scope = ?"
            ))
            .await
            .map_err(unavailable)?;
        select.set_request_timeout(Some(timeout));
        select.set_is_idempotent(true);
        let mut insert = session
            .prepare(format!(
                "INSERT INTO {keyspace}.ratelimit_sends (user_id, scope, event_id, sent_at) \
                 VALUES (?, ?, ?, ?) USING TTL ?"
            ))
            .await
            .map_err(unavailable)?;
        insert.set_request_timeout(Some(timeout));
        // Keyed by event id: writing it twice leaves one row.
        insert.set_is_idempotent(true);
        let batch = BatchSettings {
            timeout,
            ..BatchSettings::default()
        };
        let writer = BatchWriter::new(session.clone(), insert, "ratelimit_sends", batch, metrics);
        Ok(CqlStore {
            session,
            select,
            writer,
            metrics: metrics.clone(),
        })
    }
}

impl RateStore for CqlStore {
    async fn sent(&self, user_id: &str, scope: &str) -> Result<Vec<Sent>, StoreError> {
        self.metrics
            .cql_statements
            .with_label_values(&["read"])
            .inc();
        let result = self
            .session
            .execute_unpaged(&self.select, (user_id, scope))
            .await
            .map_err(unavailable)?;
        let rows = result.into_rows_result().map_err(unavailable)?;
        let mut out = Vec::new();
        for row in rows
            .rows::<(String, Option<CqlTimestamp>)>()
            .map_err(unavailable)?
        {
            let (event_id, at) = row.map_err(unavailable)?;
            out.push(Sent {
                event_id,
                at_ms: at.map(|t| t.0).unwrap_or(0),
            });
        }
        Ok(out)
    }

    async fn record(
        &self,
        user_id: &str,
        scope: &str,
        sent: &Sent,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let ttl = i32::try_from(ttl_secs.max(1)).unwrap_or(i32::MAX);
        self.writer
            .write((
                user_id.to_string(),
                scope.to_string(),
                sent.event_id.clone(),
                CqlTimestamp(sent.at_ms),
                ttl,
            ))
            .await
            .map_err(unavailable)
    }
}
