//! The ledger with many claims per Paxos round (table `dedup_claims`, migration 0005).
//!
//! A lightweight transaction costs the database a Paxos round per partition, whatever the
//! number of rows it writes there; that round, not this process, bounds the naive
//! one-LWT-per-event scheme. Here ids live in a fixed number of partitions (buckets), and the
//! claims waiting for one bucket go out as one conditional BATCH of `INSERT … IF NOT EXISTS`.
//! At most one batch per bucket is in flight; claims arriving meanwhile wait for the next one,
//! so batches grow with the load and an idle stage sends a claim at once.
//!
//! A batch applies all its rows or none. When it fails the database returns the rows that
//! exist: those claims are answered from them (`Mine` or `Taken`, as with the per-id ledger)
//! and the rest go into the next batch. Two claims of one id never share a batch (both
//! conditions would hold against the same old state): the second waits for the next round and
//! finds the first's row.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue, Row};
use tokio::sync::oneshot;

use crate::downstream::murmur2;
use crate::ledger::{Claim, Claimed, Ledger, LedgerError, classify};

type Reply = oneshot::Sender<Result<Claimed, LedgerError>>;

struct Waiting {
    claim: Claim,
    reply: Reply,
}

#[derive(Default)]
struct Bucket {
    queue: VecDeque<Waiting>,
    /// A task is sending this bucket's batches.
    flushing: bool,
}

struct Inner {
    session: Arc<Session>,
    insert: PreparedStatement,
    ttl_secs: i32,
    timeout: Duration,
    max_batch: usize,
    buckets: Vec<Mutex<Bucket>>,
}

pub struct BatchLedger {
    inner: Arc<Inner>,
}

/// The bucket of an id: the same on every instance and every version (murmur2).
pub fn bucket_of(event_id: &str, buckets: usize) -> usize {
    (murmur2(event_id.as_bytes()) & 0x7fff_ffff) as usize % buckets.max(1)
}

impl BatchLedger {
    /// Prepares the insert against `keyspace.dedup_claims`. Every batch is bounded by
    /// `timeout`, so a stalled database turns into retries, not a hang.
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        window: Duration,
        timeout: Duration,
        buckets: usize,
        max_batch: usize,
    ) -> Result<BatchLedger, LedgerError> {
        let text = format!(
            "INSERT INTO {keyspace}.dedup_claims \
             (bucket, event_id, owner, out_partition, scan_from, claimed_at) \
             VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
        );
        let insert = session
            .prepare(text)
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        Ok(BatchLedger {
            inner: Arc::new(Inner {
                session,
                insert,
                ttl_secs: i32::try_from(window.as_secs().max(1)).unwrap_or(i32::MAX),
                timeout,
                max_batch: max_batch.max(1),
                buckets: (0..buckets.max(1)).map(|_| Mutex::default()).collect(),
            }),
        })
    }
}

impl Ledger for BatchLedger {
    async fn claim(&self, claim: &Claim) -> Result<Claimed, LedgerError> {
        let b = bucket_of(&claim.event_id, self.inner.buckets.len());
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut bucket = self.inner.buckets[b]
                .lock()
                .map_err(|_| LedgerError::Unavailable("ledger queue poisoned".into()))?;
            bucket.queue.push_back(Waiting {
                claim: claim.clone(),
                reply,
            });
            !std::mem::replace(&mut bucket.flushing, true)
        };
        if start {
            // A task of its own: a claimer that gives up (shutdown) must not strand the others.
            tokio::spawn(flush(self.inner.clone(), b));
        }
        answer
            .await
            .map_err(|_| LedgerError::Unavailable("ledger batch dropped".into()))?
    }
}

/// Takes up to `max` waiting claims with distinct ids, keeping the order of the rest.
fn take_batch(queue: &mut VecDeque<Waiting>, max: usize) -> Vec<Waiting> {
    let mut ids = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = VecDeque::with_capacity(queue.len());
    while let Some(w) = queue.pop_front() {
        if batch.len() < max && ids.insert(w.claim.event_id.clone()) {
            batch.push(w);
        } else {
            rest.push_back(w);
        }
    }
    *queue = rest;
    batch
}

/// Sends the bucket's batches until its queue is empty.
async fn flush(inner: Arc<Inner>, b: usize) {
    loop {
        let batch = {
            let Ok(mut bucket) = inner.buckets[b].lock() else {
                return;
            };
            let batch = take_batch(&mut bucket.queue, inner.max_batch);
            if batch.is_empty() {
                bucket.flushing = false;
                return;
            }
            batch
        };
        let undecided = inner.send(b, batch).await;
        if let Ok(mut bucket) = inner.buckets[b].lock() {
            for w in undecided.into_iter().rev() {
                bucket.queue.push_front(w);
            }
        }
    }
}

/// A stored row of a failed batch.
struct Existing {
    owner: String,
    out_partition: i32,
    scan_from: i64,
    at_ms: i64,
}

impl Inner {
    /// One conditional batch; answers what it decided and returns the claims to send again.
    async fn send(&self, b: usize, batch: Vec<Waiting>) -> Vec<Waiting> {
        let mut statement = Batch::new(BatchType::Unlogged);
        for _ in &batch {
            statement.append_statement(self.insert.clone());
        }
        statement.set_request_timeout(Some(self.timeout));
        // A claim sent twice finds its own row (`Mine`): retrying is safe.
        statement.set_is_idempotent(true);
        let bucket = b as i32;
        let values: Vec<_> = batch
            .iter()
            .map(|w| {
                let c = &w.claim;
                (
                    bucket,
                    c.event_id.as_str(),
                    c.owner.as_str(),
                    c.out_partition,
                    c.scan_from,
                    CqlTimestamp(c.at_ms),
                    self.ttl_secs,
                )
            })
            .collect();
        let answer = match self.session.batch(&statement, values).await {
            Ok(result) => parse(result),
            Err(e) => Err(LedgerError::Unavailable(e.to_string())),
        };
        let existing = match answer {
            Ok(None) => {
                for w in batch {
                    let _ = w.reply.send(Ok(Claimed::New));
                }
                return Vec::new();
            }
            Ok(Some(existing)) => existing,
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(LedgerError::Unavailable(e.to_string())));
                }
                return Vec::new();
            }
        };
        let mut undecided = Vec::new();
        for w in batch {
            match existing.get(&w.claim.event_id) {
                Some(row) => {
                    let owner = row.owner.clone();
                    let answer =
                        classify(&w.claim, owner, row.out_partition, row.scan_from, row.at_ms);
                    let _ = w.reply.send(Ok(answer));
                }
                None if existing.is_empty() => {
                    // Refused without naming a row: never guess; the record is retried.
                    let _ = w.reply.send(Err(LedgerError::Unavailable(
                        "conditional batch refused without a conflicting row".into(),
                    )));
                }
                None => undecided.push(w),
            }
        }
        undecided
    }
}

/// None when the batch applied; otherwise the rows it found, by event id.
fn parse(
    result: scylla::response::query_result::QueryResult,
) -> Result<Option<HashMap<String, Existing>>, LedgerError> {
    let unavailable = |e: &dyn std::fmt::Display| LedgerError::Unavailable(e.to_string());
    let rows = result.into_rows_result().map_err(|e| unavailable(&e))?;
    let specs = rows.column_specs();
    let index = |name: &str| specs.get_by_name(name).map(|(i, _)| i);
    let at = [
        "[applied]",
        "event_id",
        "owner",
        "out_partition",
        "scan_from",
        "claimed_at",
    ]
    .map(index);
    let mut existing = HashMap::new();
    for row in rows.rows::<Row>().map_err(|e| unavailable(&e))? {
        let row = row.map_err(|e| unavailable(&e))?;
        let col = |i: Option<usize>| i.and_then(|i| row.columns.get(i).cloned().flatten());
        match col(at[0]) {
            Some(CqlValue::Boolean(true)) => return Ok(None),
            Some(CqlValue::Boolean(false)) => {}
            other => return Err(unavailable(&format!("unexpected LWT answer {other:?}"))),
        }
        let Some(event_id) = col(at[1]).and_then(|v| v.as_text().cloned()) else {
            continue;
        };
        existing.insert(
            event_id,
            Existing {
                owner: col(at[2])
                    .and_then(|v| v.as_text().cloned())
                    .unwrap_or_default(),
                out_partition: col(at[3]).and_then(|v| v.as_int()).unwrap_or(-1),
                scan_from: col(at[4]).and_then(|v| v.as_bigint()).unwrap_or(0),
                at_ms: match col(at[5]) {
                    Some(CqlValue::Timestamp(t)) => t.0,
                    _ => 0,
                },
            },
        );
    }
    Ok(Some(existing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(id: &str) -> Waiting {
        let (reply, _) = oneshot::channel();
        Waiting {
            claim: Claim {
                event_id: id.into(),
                owner: "o".into(),
                out_partition: 0,
                scan_from: 0,
                at_ms: 0,
            },
            reply,
        }
    }

    #[test]
    fn a_batch_never_holds_one_id_twice_and_keeps_the_order_of_the_rest() {
        let mut q: VecDeque<Waiting> = ["a", "b", "a", "c", "d", "a"].map(waiting).into();
        let ids = |v: &[Waiting]| {
            v.iter()
                .map(|w| w.claim.event_id.clone())
                .collect::<Vec<_>>()
        };
        let first = take_batch(&mut q, 3);
        assert_eq!(ids(&first), ["a", "b", "c"]);
        let rest: Vec<Waiting> = q.drain(..).collect();
        assert_eq!(ids(&rest), ["a", "d", "a"]);
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket_of("evt-1", 64), bucket_of("evt-1", 64));
        let used: HashSet<usize> = (0..1_000)
            .map(|i| bucket_of(&format!("e{i}"), 16))
            .collect();
        assert_eq!(used.len(), 16);
    }
}
