//! The ledger in CQL: `INSERT ... IF NOT EXISTS USING TTL <window>` (a Paxos round per new
//! id), so concurrent claims of one id from different partitions or instances get one winner.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue, Row};

use crate::ledger::{Claim, Claimed, Ledger, LedgerError, classify};

pub struct CqlLedger {
    session: Arc<Session>,
    insert: PreparedStatement,
    ttl_secs: i32,
}

impl CqlLedger {
    /// Prepares the statement against `keyspace.dedup_ledger` (migration 0002). Each request
    /// is bounded by `timeout`, so a stalled database turns into a retry, not a hang.
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        window: Duration,
        timeout: Duration,
    ) -> Result<CqlLedger, LedgerError> {
        let text = format!(
            "INSERT INTO {keyspace}.dedup_ledger (event_id, owner, out_partition, scan_from, claimed_at) \
             VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
        );
        let mut insert = session
            .prepare(text)
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        insert.set_request_timeout(Some(timeout));
        // A repeated claim by the same owner is recognised as its own, so retrying is safe.
        insert.set_is_idempotent(true);
        Ok(CqlLedger {
            session,
            insert,
            ttl_secs: i32::try_from(window.as_secs().max(1)).unwrap_or(i32::MAX),
        })
    }
}

impl Ledger for CqlLedger {
    async fn claim(&self, claim: &Claim) -> Result<Claimed, LedgerError> {
        let unavailable = |e: &dyn std::fmt::Display| LedgerError::Unavailable(e.to_string());
        let result = self
            .session
            .execute_unpaged(
                &self.insert,
                (
                    &claim.event_id,
                    &claim.owner,
                    claim.out_partition,
                    claim.scan_from,
                    CqlTimestamp(claim.at_ms),
                    self.ttl_secs,
                ),
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let rows = result.into_rows_result().map_err(|e| unavailable(&e))?;
        let specs = rows.column_specs();
        let index = |name: &str| specs.get_by_name(name).map(|(i, _)| i);
        let (applied_at, owner_at, part_at, scan_at, claimed_at) = (
            index("[applied]"),
            index("owner"),
            index("out_partition"),
            index("scan_from"),
            index("claimed_at"),
        );
        let row: Row = rows
            .maybe_first_row::<Row>()
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| LedgerError::Unavailable("LWT returned no row".into()))?;
        let col = |i: Option<usize>| i.and_then(|i| row.columns.get(i).cloned().flatten());
        match col(applied_at) {
            Some(CqlValue::Boolean(true)) => return Ok(Claimed::New),
            Some(CqlValue::Boolean(false)) => {}
            other => {
                return Err(LedgerError::Unavailable(format!(
                    "unexpected LWT answer {other:?}"
                )));
            }
        }
        let owner = col(owner_at)
            .and_then(|v| v.as_text().cloned())
            .unwrap_or_default();
        let out_partition = col(part_at).and_then(|v| v.as_int()).unwrap_or(-1);
        let scan_from = col(scan_at).and_then(|v| v.as_bigint()).unwrap_or(0);
        let at_ms = match col(claimed_at) {
            Some(CqlValue::Timestamp(t)) => t.0,
            _ => 0,
        };
        Ok(classify(claim, owner, out_partition, scan_from, at_ms))
    }
}
