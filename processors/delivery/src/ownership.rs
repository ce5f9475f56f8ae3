//! Who may call the provider for a channel partition's messages: the owner of its current
//! epoch. The epoch is raised with one lightweight transaction when the partition is assigned
//! (`partition_owners`, migration 0009). Before a call, the owner confirms that its epoch is
//! still current with a plain read that starts after its claim was written; a stale owner (a
//! process paused past its session timeout while another took the partition) learns it lost
//! the partition before it calls anyone, and its claim tells the new owner the message may be
//! in flight. Confirmations are shared: one read answers every claim written before it.

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

pub trait Ownership: Send + Sync + 'static {
    /// Takes `partition` over: its epoch, one higher than the last owner's.
    fn take(&self, partition: i32) -> impl Future<Output = Result<i64, LedgerError>> + Send;

    /// Whether `epoch` is still `partition`'s, asked after the caller's last write.
    fn confirm(
        &self,
        partition: i32,
        epoch: i64,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

type Waiter = (i32, i64, oneshot::Sender<Result<bool, String>>);

pub struct CqlOwnership {
    session: Arc<Session>,
    group: String,
    topic: String,
    owner: String,
    read_one: PreparedStatement,
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
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(confirm_rounds(
            session.clone(),
            read_many,
            (group.to_string(), topic.to_string()),
            min_interval,
            metrics.clone(),
            rx,
        ));
        Ok(CqlOwnership {
            session,
            group: group.into(),
            topic: topic.into(),
            owner: owner.into(),
            read_one,
            insert,
            update,
            confirms: tx,
            metrics: metrics.clone(),
        })
    }

    async fn current(&self, partition: i32) -> Result<Option<i64>, LedgerError> {
        self.metrics
            .cql_statements
            .with_label_values(&["read"])
            .inc();
        let row = self
            .session
            .execute_unpaged(&self.read_one, (&self.group, &self.topic, partition))
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(unavailable)?
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(unavailable)?;
        Ok(row.and_then(|(e,)| e))
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
    async fn take(&self, partition: i32) -> Result<i64, LedgerError> {
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

    async fn confirm(&self, partition: i32, epoch: i64) -> Result<bool, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.confirms
            .send((partition, epoch, tx))
            .await
            .map_err(|_| unavailable("the confirmation task stopped"))?;
        match rx.await {
            Ok(Ok(current)) => Ok(current),
            Ok(Err(e)) => Err(LedgerError::Unavailable(e)),
            Err(_) => Err(unavailable("the confirmation task stopped")),
        }
    }
}

/// Answers confirmation requests in rounds: every request waiting when a round starts is
/// answered by that round's one read of every partition involved.
async fn confirm_rounds(
    session: Arc<Session>,
    read_many: PreparedStatement,
    (group, topic): (String, String),
    min_interval: Duration,
    metrics: Metrics,
    mut rx: mpsc::Receiver<Waiter>,
) {
    let mut last = tokio::time::Instant::now() - min_interval;
    while let Some(first) = rx.recv().await {
        tokio::time::sleep_until(last + min_interval).await;
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        last = tokio::time::Instant::now();
        let mut partitions: Vec<i32> = waiters.iter().map(|(p, _, _)| *p).collect();
        partitions.sort_unstable();
        partitions.dedup();
        metrics.cql_statements.with_label_values(&["read"]).inc();
        let epochs: Result<HashMap<i32, i64>, String> = async {
            let rows = session
                .execute_unpaged(&read_many, (&group, &topic, &partitions))
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
        .await;
        for (p, epoch, tx) in waiters {
            let answer = match &epochs {
                Ok(current) => Ok(current.get(&p) == Some(&epoch)),
                Err(e) => Err(e.clone()),
            };
            let _ = tx.send(answer);
        }
    }
}

/// Epochs in memory (unit tests): `steal` plays another owner taking a partition over.
#[derive(Default)]
pub struct MemoryOwnership {
    epochs: Mutex<HashMap<i32, i64>>,
}

impl MemoryOwnership {
    pub fn steal(&self, partition: i32) {
        let mut e = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        *e.entry(partition).or_insert(0) += 1;
    }
}

impl Ownership for MemoryOwnership {
    async fn take(&self, partition: i32) -> Result<i64, LedgerError> {
        let mut e = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = e.entry(partition).or_insert(0);
        *epoch += 1;
        Ok(*epoch)
    }

    async fn confirm(&self, partition: i32, epoch: i64) -> Result<bool, LedgerError> {
        let e = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(e.get(&partition) == Some(&epoch))
    }
}
