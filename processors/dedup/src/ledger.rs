//! The record of accepted ids (`dedup_accepted`, migration 0008): which input record first
//! accepted each (user, event) on an owned partition. Plain writes, batched; a point read
//! only for an id the Bloom filters may have seen; a scan of a partition's rows on assignment.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use notify_runtime::Metrics;
use notify_runtime::cql::{BatchSettings, BatchWriter};
use notify_runtime::partitioner::murmur2;
use prometheus::HistogramVec;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use crate::seen::Id;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("dedup ledger unavailable: {0}")]
    Unavailable(String),
}

/// The ledger's operations: CQL in production, memory in unit tests.
pub trait Ledger: Send + Sync + 'static {
    /// The position (`topic/partition/offset`) that accepted `id` on `partition`, if any.
    fn lookup(
        &self,
        partition: i32,
        id: &Id,
    ) -> impl Future<Output = Result<Option<String>, LedgerError>> + Send;

    /// Records that the record at `position` accepted `id`; returns once it is durable.
    fn record(
        &self,
        partition: i32,
        id: &Id,
        position: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Every id accepted on `partition` within the window.
    fn scan(&self, partition: i32) -> impl Future<Output = Result<Vec<Id>, LedgerError>> + Send;
}

/// The bucket of an id within its partition: the same on every instance.
pub fn bucket(id: &Id, buckets: u32) -> i32 {
    let mut key = Vec::with_capacity(id.user_id.len() + id.event_id.len() + 1);
    key.extend_from_slice(id.user_id.as_bytes());
    key.push(b'/');
    key.extend_from_slice(id.event_id.as_bytes());
    ((murmur2(&key) & 0x7fff_ffff) % buckets.max(1)) as i32
}

type Row = (i32, i32, String, String, String, i32);

pub struct CqlLedger {
    session: Arc<Session>,
    select: PreparedStatement,
    scan: PreparedStatement,
    writer: BatchWriter<Row>,
    buckets: u32,
    ttl_secs: i32,
    metrics: Metrics,
    latency: HistogramVec,
}

impl CqlLedger {
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        window: Duration,
        buckets: u32,
        batch: BatchSettings,
        metrics: &Metrics,
        latency: HistogramVec,
    ) -> Result<CqlLedger, LedgerError> {
        let unavailable = |e: &dyn std::fmt::Display| LedgerError::Unavailable(e.to_string());
        let table = format!("{keyspace}.dedup_accepted");
        let mut select = session
            .prepare(format!(
                "SELECT accepted_at FROM {table} WHERE owner_partition = ? AND bucket = ? \
                 AND user_id = ? AND event_id = ?"
            ))
            .await
            .map_err(|e| unavailable(&e))?;
        select.set_request_timeout(Some(batch.timeout));
        select.set_is_idempotent(true);
        let mut scan = session
            .prepare(format!(
                "SELECT user_id, event_id FROM {table} WHERE owner_partition = ? AND bucket = ?"
            ))
            .await
            .map_err(|e| unavailable(&e))?;
        scan.set_page_size(5_000);
        scan.set_is_idempotent(true);
        let insert = session
            .prepare(format!(
                "INSERT INTO {table} (owner_partition, bucket, user_id, event_id, accepted_at) \
                 VALUES (?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await
            .map_err(|e| unavailable(&e))?;
        let writer = BatchWriter::new(session.clone(), insert, "dedup_accepted", batch, metrics);
        Ok(CqlLedger {
            session,
            select,
            scan,
            writer,
            buckets,
            ttl_secs: i32::try_from(window.as_secs()).unwrap_or(i32::MAX).max(1),
            metrics: metrics.clone(),
            latency,
        })
    }
}

impl Ledger for CqlLedger {
    async fn lookup(&self, partition: i32, id: &Id) -> Result<Option<String>, LedgerError> {
        let started = Instant::now();
        self.metrics
            .cql_statements
            .with_label_values(&["read"])
            .inc();
        let b = bucket(id, self.buckets);
        let result = self
            .session
            .execute_unpaged(&self.select, (partition, b, &id.user_id, &id.event_id))
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        let row = result
            .into_rows_result()
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?
            .maybe_first_row::<(Option<String>,)>()
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        self.latency
            .with_label_values(&["lookup"])
            .observe(started.elapsed().as_secs_f64());
        Ok(row.and_then(|(p,)| p))
    }

    async fn record(&self, partition: i32, id: &Id, position: &str) -> Result<(), LedgerError> {
        let started = Instant::now();
        let row = (
            partition,
            bucket(id, self.buckets),
            id.user_id.clone(),
            id.event_id.clone(),
            position.to_string(),
            self.ttl_secs,
        );
        self.writer
            .write(row)
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        self.latency
            .with_label_values(&["record"])
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn scan(&self, partition: i32) -> Result<Vec<Id>, LedgerError> {
        let mut ids = Vec::new();
        for b in 0..self.buckets as i32 {
            self.metrics
                .cql_statements
                .with_label_values(&["read"])
                .inc();
            let mut rows = self
                .session
                .execute_iter(self.scan.clone(), (partition, b))
                .await
                .map_err(|e| LedgerError::Unavailable(e.to_string()))?
                .rows_stream::<(String, String)>()
                .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
            while let Some((user_id, event_id)) = rows
                .try_next()
                .await
                .map_err(|e| LedgerError::Unavailable(e.to_string()))?
            {
                ids.push(Id { user_id, event_id });
            }
        }
        Ok(ids)
    }
}

/// The same contract in memory (unit tests).
#[derive(Default)]
pub struct MemoryLedger {
    rows: Mutex<HashMap<(i32, Id), String>>,
    pub lookups: std::sync::atomic::AtomicU64,
}

impl Ledger for MemoryLedger {
    async fn lookup(&self, partition: i32, id: &Id) -> Result<Option<String>, LedgerError> {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        Ok(rows.get(&(partition, id.clone())).cloned())
    }

    async fn record(&self, partition: i32, id: &Id, position: &str) -> Result<(), LedgerError> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.insert((partition, id.clone()), position.to_string());
        Ok(())
    }

    async fn scan(&self, partition: i32) -> Result<Vec<Id>, LedgerError> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        Ok(rows
            .keys()
            .filter(|(p, _)| *p == partition)
            .map(|(_, id)| id.clone())
            .collect())
    }
}

/// What every ledger must do; run against memory here and against CQL by the integration
/// tests. Panics on a violation.
pub async fn conformance(ledger: &impl Ledger) {
    let id = |e: &str| Id {
        user_id: "u1".into(),
        event_id: e.into(),
    };
    assert_eq!(ledger.lookup(3, &id("a")).await.expect("lookup"), None);
    ledger.record(3, &id("a"), "in/3/10").await.expect("record");
    ledger.record(3, &id("b"), "in/3/11").await.expect("record");
    ledger.record(4, &id("a"), "in/4/1").await.expect("record");
    assert_eq!(
        ledger.lookup(3, &id("a")).await.expect("lookup").as_deref(),
        Some("in/3/10")
    );
    let other_user = Id {
        user_id: "u2".into(),
        event_id: "a".into(),
    };
    assert_eq!(ledger.lookup(3, &other_user).await.expect("lookup"), None);
    let mut scanned = ledger.scan(3).await.expect("scan");
    scanned.sort_by(|x, y| x.event_id.cmp(&y.event_id));
    assert_eq!(
        scanned,
        vec![id("a"), id("b")],
        "only the partition's own ids"
    );
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_ledger_conforms() {
        super::conformance(&super::MemoryLedger::default()).await;
    }
}
