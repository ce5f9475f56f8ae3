//! Who may call the provider for a channel partition's messages: the owner of its current
//! epoch. The epoch is raised with one lightweight transaction when the partition is assigned
//! (`partition_owners`, migration 0009).
//!
//! Before a call, the owner claims the record's offset: it raises its epoch's claimed offset
//! (`partition_claims`, one plain row per epoch), then confirms that its epoch is still
//! current with a plain read that starts after the claim was written. A stale owner (a process
//! paused past its session timeout while another took the partition) learns it lost the
//! partition before it calls anyone, and its claim tells the new owner which records may be in
//! flight: those at or below an earlier epoch's claimed offset. Claims and confirmations are
//! shared: one round (one write per partition that needs a higher claim, one read) answers
//! every record waiting when it starts, so there is no database write per message before the
//! call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_runtime::Metrics;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use tokio::sync::{mpsc, oneshot};

use crate::ledger::LedgerError;

/// What taking a partition over found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takeover {
    pub epoch: i64,
    /// The highest offset an earlier epoch claimed: records up to it may have been handled.
    /// None when no earlier epoch claimed anything.
    pub claimed_through: Option<i64>,
    /// When that claim was last raised (ms): an earlier owner may be in a call until a lease
    /// after it.
    pub claimed_at_ms: i64,
    /// An earlier epoch exists that recorded no claims (an owner from before claims were
    /// recorded): which records it handled is unknown.
    pub unknown_earlier: bool,
}

pub trait Ownership: Send + Sync + 'static {
    /// Takes `partition` over: its epoch, one higher than the last owner's, and what the
    /// earlier owners claimed.
    fn take(&self, partition: i32) -> impl Future<Output = Result<Takeover, LedgerError>> + Send;

    /// Claims `offset` of `partition` for `epoch` (durably, before any call for it), then
    /// answers whether `epoch` is still `partition`'s.
    fn claim(
        &self,
        partition: i32,
        epoch: i64,
        offset: i64,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

/// (partition, epoch, offset, answer).
type Waiter = (i32, i64, i64, oneshot::Sender<Result<bool, String>>);

pub struct CqlOwnership {
    session: Arc<Session>,
    group: String,
    topic: String,
    owner: String,
    read_one: PreparedStatement,
    read_claims: PreparedStatement,
    insert: PreparedStatement,
    update: PreparedStatement,
    confirms: mpsc::Sender<Waiter>,
    metrics: Metrics,
}

impl CqlOwnership {
    /// `min_interval` spaces confirmation reads: every claim waits at most that long more,
    /// and the database sees at most one read per interval from this process.
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        group: &str,
        topic: &str,
        owner: &str,
        min_interval: Duration,
        metrics: &Metrics,
    ) -> Result<CqlOwnership, LedgerError> {
        let table = format!("{keyspace}.partition_owners");
        let read_one = session
            .prepare(format!(
                "SELECT epoch FROM {table} WHERE group_id = ? AND topic = ? AND partition = ?"
            ))
            .await
            .map_err(unavailable)?;
        let read_many = session
            .prepare(format!(
                "SELECT partition, epoch FROM {table} WHERE group_id = ? AND topic = ? \
                 AND partition IN ?"
            ))
            .await
            .map_err(unavailable)?;
        let insert = session
            .prepare(format!(
                "INSERT INTO {table} (group_id, topic, partition, epoch, owner, since) \
                 VALUES (?, ?, ?, 1, ?, ?) IF NOT EXISTS"
            ))
            .await
            .map_err(unavailable)?;
        let update = session
            .prepare(format!(
                "UPDATE {table} SET epoch = ?, owner = ?, since = ? WHERE group_id = ? \
                 AND topic = ? AND partition = ? IF epoch = ?"
            ))
            .await
            .map_err(unavailable)?;
        let claims = format!("{keyspace}.partition_claims");
        let read_claims = session
            .prepare(format!(
                "SELECT epoch, max_offset, claimed_at FROM {claims} WHERE group_id = ? \
                 AND topic = ? AND partition = ?"
            ))
            .await
            .map_err(unavailable)?;
        let write_claim = session
            .prepare(format!(
                "INSERT INTO {claims} (group_id, topic, partition, epoch, max_offset, \
                 claimed_at) VALUES (?, ?, ?, ?, ?, ?)"
            ))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(4096);
        let rounds = Rounds {
            session: session.clone(),
            read_many,
            write_claim,
            group: group.to_string(),
            topic: topic.to_string(),
            min_interval,
            metrics: metrics.clone(),
            claimed: HashMap::new(),
        };
        tokio::spawn(rounds.run(rx));
        Ok(CqlOwnership {
            session,
            group: group.into(),
            topic: topic.into(),
            owner: owner.into(),
            read_one,
            read_claims,
            insert,
            update,
            confirms: tx,
            metrics: metrics.clone(),
        })
    }

    async fn current(&self, partition: i32) -> Result<Option<i64>, LedgerError> {
        let row = self
            .read_partition(&self.read_one, partition)
            .await?
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(unavailable)?;
        Ok(row.and_then(|(e,)| e))
    }

    /// Runs a read of this group's rows for `partition`, counted as one CQL read.
    async fn read_partition(
        &self,
        statement: &PreparedStatement,
        partition: i32,
    ) -> Result<scylla::response::query_result::QueryRowsResult, LedgerError> {
        self.metrics
            .cql_statements
            .with_label_values(&["read"])
            .inc();
        self.session
            .execute_unpaged(statement, (&self.group, &self.topic, partition))
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(unavailable)
    }

    /// What epochs before `epoch` claimed of `partition`.
    async fn earlier_claims(&self, partition: i32, epoch: i64) -> Result<Takeover, LedgerError> {
        let rows = self.read_partition(&self.read_claims, partition).await?;
        let mut found = Takeover {
            epoch,
            claimed_through: None,
            claimed_at_ms: 0,
            unknown_earlier: false,
        };
        let mut epochs_with_claims = 0;
        type ClaimRow = (i64, Option<i64>, Option<CqlTimestamp>);
        for row in rows.rows::<ClaimRow>().map_err(unavailable)? {
            let (e, max, at) = row.map_err(unavailable)?;
            if e >= epoch {
                continue;
            }
            epochs_with_claims += 1;
            if let Some(max) = max {
                found.claimed_through = Some(found.claimed_through.map_or(max, |m| m.max(max)));
            }
            found.claimed_at_ms = found.claimed_at_ms.max(at.map_or(0, |t| t.0));
        }
        // Claims older than the table's TTL are gone with what they covered; an owner from
        // before claims were recorded (epochs without a row) is what this flags.
        found.unknown_earlier = epochs_with_claims == 0 && epoch > 1;
        Ok(found)
    }
}

fn applied(result: scylla::response::query_result::QueryResult) -> Result<bool, LedgerError> {
    let rows = result.into_rows_result().map_err(unavailable)?;
    let row = rows
        .maybe_first_row::<scylla::value::Row>()
        .map_err(unavailable)?;
    Ok(matches!(
        row.and_then(|r| r.columns.into_iter().next().flatten()),
        Some(scylla::value::CqlValue::Boolean(true))
    ))
}

impl Ownership for CqlOwnership {
    async fn take(&self, partition: i32) -> Result<Takeover, LedgerError> {
        let epoch = self.raise_epoch(partition).await?;
        self.earlier_claims(partition, epoch).await
    }

    async fn claim(&self, partition: i32, epoch: i64, offset: i64) -> Result<bool, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.confirms
            .send((partition, epoch, offset, tx))
            .await
            .map_err(|_| unavailable("the claim task stopped"))?;
        match rx.await {
            Ok(Ok(current)) => Ok(current),
            Ok(Err(e)) => Err(LedgerError::Unavailable(e)),
            Err(_) => Err(unavailable("the claim task stopped")),
        }
    }
}

impl CqlOwnership {
    /// One lightweight transaction (more when another instance races this one).
    async fn raise_epoch(&self, partition: i32) -> Result<i64, LedgerError> {
        let now = CqlTimestamp(notify_runtime::now_ms());
        loop {
            self.metrics
                .cql_statements
                .with_label_values(&["lwt"])
                .inc();
            let result = match self.current(partition).await? {
                None => {
                    let r = self
                        .session
                        .execute_unpaged(
                            &self.insert,
                            (&self.group, &self.topic, partition, &self.owner, now),
                        )
                        .await
                        .map_err(unavailable)?;
                    applied(r)?.then_some(1)
                }
                Some(epoch) => {
                    let next = epoch + 1;
                    let r = self
                        .session
                        .execute_unpaged(
                            &self.update,
                            (
                                next,
                                &self.owner,
                                now,
                                &self.group,
                                &self.topic,
                                partition,
                                epoch,
                            ),
                        )
                        .await
                        .map_err(unavailable)?;
                    applied(r)?.then_some(next)
                }
            };
            if let Some(epoch) = result {
                tracing::info!(topic = %self.topic, partition, epoch, "partition taken over");
                return Ok(epoch);
            }
            // Another instance raised it meanwhile (a rebalance racing ours): read and try again.
        }
    }
}

/// The claim task: answers claims in rounds. Every claim waiting when a round starts is
/// answered by that round's writes (a higher claimed offset for each partition that needs
/// one) and its one read of every partition's epoch, which starts after the writes.
struct Rounds {
    session: Arc<Session>,
    read_many: PreparedStatement,
    write_claim: PreparedStatement,
    group: String,
    topic: String,
    min_interval: Duration,
    metrics: Metrics,
    /// What this process has claimed durably, by (partition, epoch).
    claimed: HashMap<(i32, i64), i64>,
}

impl Rounds {
    async fn run(mut self, mut rx: mpsc::Receiver<Waiter>) {
        let mut last = tokio::time::Instant::now() - self.min_interval;
        while let Some(first) = rx.recv().await {
            tokio::time::sleep_until(last + self.min_interval).await;
            let mut waiters = vec![first];
            while let Ok(w) = rx.try_recv() {
                waiters.push(w);
            }
            last = tokio::time::Instant::now();
            let answers = match self.claim(&waiters).await {
                Ok(()) => self.epochs(&waiters).await,
                Err(e) => Err(e),
            };
            for (p, epoch, _, tx) in waiters {
                let answer = match &answers {
                    Ok(current) => Ok(current.get(&p) == Some(&epoch)),
                    Err(e) => Err(e.clone()),
                };
                let _ = tx.send(answer);
            }
        }
    }

    /// Raises the claimed offset of every (partition, epoch) whose waiters need it.
    async fn claim(&mut self, waiters: &[Waiter]) -> Result<(), String> {
        let mut wanted: HashMap<(i32, i64), i64> = HashMap::new();
        for (p, epoch, offset, _) in waiters {
            let w = wanted.entry((*p, *epoch)).or_insert(*offset);
            *w = (*w).max(*offset);
        }
        wanted.retain(|k, max| self.claimed.get(k).is_none_or(|c| c < max));
        if wanted.is_empty() {
            return Ok(());
        }
        let now = CqlTimestamp(notify_runtime::now_ms());
        let writes = wanted.iter().map(|((p, epoch), max)| {
            self.metrics
                .cql_statements
                .with_label_values(&["write"])
                .inc();
            let values = (&self.group, &self.topic, *p, *epoch, *max, now);
            self.session.execute_unpaged(&self.write_claim, values)
        });
        for result in futures::future::join_all(writes).await {
            result.map_err(|e| e.to_string())?;
        }
        // Only what this round wrote: an epoch's row is never lowered by a later round.
        self.claimed.extend(wanted);
        Ok(())
    }

    async fn epochs(&self, waiters: &[Waiter]) -> Result<HashMap<i32, i64>, String> {
        let mut partitions: Vec<i32> = waiters.iter().map(|(p, ..)| *p).collect();
        partitions.sort_unstable();
        partitions.dedup();
        self.metrics
            .cql_statements
            .with_label_values(&["read"])
            .inc();
        let rows = self
            .session
            .execute_unpaged(&self.read_many, (&self.group, &self.topic, &partitions))
            .await
            .map_err(|e| e.to_string())?
            .into_rows_result()
            .map_err(|e| e.to_string())?;
        let mut out = HashMap::new();
        for row in rows
            .rows::<(i32, Option<i64>)>()
            .map_err(|e| e.to_string())?
        {
            let (p, e) = row.map_err(|e| e.to_string())?;
            out.insert(p, e.unwrap_or(0));
        }
        Ok(out)
    }
}

/// Epochs and claims in memory (unit tests): `steal` plays another owner taking a partition
/// over, `claimed_earlier` an earlier owner's claims.
#[derive(Default)]
pub struct MemoryOwnership {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    epochs: HashMap<i32, i64>,
    /// (partition, epoch) -> (claimed offset, at ms).
    claims: HashMap<(i32, i64), (i64, i64)>,
}

impl MemoryOwnership {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn steal(&self, partition: i32) {
        *self.state().epochs.entry(partition).or_insert(0) += 1;
    }

    /// An earlier owner of `partition` claimed up to `offset` at `at_ms`.
    pub fn claimed_earlier(&self, partition: i32, offset: i64, at_ms: i64) {
        let mut s = self.state();
        let epoch = s.epochs.entry(partition).or_insert(0);
        *epoch += 1;
        let epoch = *epoch;
        s.claims.insert((partition, epoch), (offset, at_ms));
    }

    /// The offset `epoch` claimed of `partition`, if any.
    pub fn claimed(&self, partition: i32, epoch: i64) -> Option<i64> {
        self.state().claims.get(&(partition, epoch)).map(|c| c.0)
    }
}

impl Ownership for MemoryOwnership {
    async fn take(&self, partition: i32) -> Result<Takeover, LedgerError> {
        let mut s = self.state();
        let epoch = s.epochs.entry(partition).or_insert(0);
        *epoch += 1;
        let epoch = *epoch;
        let earlier = s
            .claims
            .iter()
            .filter(|((p, e), _)| *p == partition && *e < epoch)
            .map(|(_, c)| *c);
        let claimed_through = earlier.clone().map(|c| c.0).max();
        Ok(Takeover {
            epoch,
            claimed_through,
            claimed_at_ms: earlier.map(|c| c.1).max().unwrap_or(0),
            unknown_earlier: false,
        })
    }

    async fn claim(&self, partition: i32, epoch: i64, offset: i64) -> Result<bool, LedgerError> {
        let mut s = self.state();
        let now = notify_runtime::now_ms();
        let c = s.claims.entry((partition, epoch)).or_insert((offset, now));
        if c.0 < offset {
            *c = (offset, now);
        }
        Ok(s.epochs.get(&partition) == Some(&epoch))
    }
}
