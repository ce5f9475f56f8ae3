//! Rate-limit state in CQL (`{keyspace}.ratelimit_sends`, migration 0003): one row per
//! accepted send, TTL = the scope's longest window, so nothing needs cleaning up.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;

use crate::store::{RateStore, Sent, StoreError};

pub struct CqlStore {
    session: Arc<Session>,
    select: PreparedStatement,
    insert: PreparedStatement,
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
        Ok(CqlStore {
            session,
            select,
            insert,
        })
    }
}

impl RateStore for CqlStore {
    async fn sent(&self, user_id: &str, scope: &str) -> Result<Vec<Sent>, StoreError> {
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
        self.session
            .execute_unpaged(
                &self.insert,
                (
                    user_id,
                    scope,
                    sent.event_id.as_str(),
                    CqlTimestamp(sent.at_ms),
                    ttl,
                ),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
