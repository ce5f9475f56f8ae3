//! Group commit for plain CQL writes: rows written at about the same time go to the database
//! as one unlogged batch, and every writer waits until its batch is applied. A stage then
//! awaits its own write (state is durable before its outputs, and so before its offset
//! commits) while the database sees one statement per batch instead of one per record.
//!
//! Rows must be idempotent writes (the same values again change nothing): a failed batch is
//! reported to all its writers, who retry, and the driver may retry a batch itself.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::cql::CqlError;
use crate::metrics::Metrics;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Writes rows of one prepared statement in batches. Cheap to clone.
pub struct BatchWriter<V> {
    rows: mpsc::Sender<(V, Waiter)>,
}

impl<V> Clone for BatchWriter<V> {
    fn clone(&self) -> Self {
        BatchWriter {
            rows: self.rows.clone(),
        }
    }
}

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Rows per batch at most (mind the database's batch size warning and failure limits).
    pub max_rows: usize,
    /// How long the first row of a batch waits for company.
    pub linger: Duration,
    /// Batches in flight at once.
    pub concurrency: usize,
    pub timeout: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_rows: 100,
            linger: Duration::from_millis(2),
            concurrency: 4,
            timeout: Duration::from_secs(5),
        }
    }
}

impl<V: SerializeRow + Send + Sync + 'static> BatchWriter<V> {
    /// Starts the writer's task; `table` names the rows in `notify_cql_batched_rows_total`.
    pub fn new(
        session: Arc<Session>,
        statement: PreparedStatement,
        table: &'static str,
        settings: BatchSettings,
        metrics: &Metrics,
    ) -> BatchWriter<V> {
        let (tx, rx) = mpsc::channel(settings.max_rows * settings.concurrency * 4);
        let job = Flusher {
            session,
            statement,
            table,
            settings,
            metrics: metrics.clone(),
            in_flight: Arc::new(Semaphore::new(settings.concurrency.max(1))),
        };
        tokio::spawn(job.run(rx));
        BatchWriter { rows: tx }
    }

    /// Writes `row` and returns once its batch is applied.
    pub async fn write(&self, row: V) -> Result<(), CqlError> {
        let (done, applied) = oneshot::channel();
        self.rows
            .send((row, done))
            .await
            .map_err(|_| CqlError::Query("the batch writer stopped".into()))?;
        match applied.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(CqlError::Query(e)),
            Err(_) => Err(CqlError::Query("the batch writer stopped".into())),
        }
    }
}

struct Flusher {
    session: Arc<Session>,
    statement: PreparedStatement,
    table: &'static str,
    settings: BatchSettings,
    metrics: Metrics,
    in_flight: Arc<Semaphore>,
}

impl Flusher {
    async fn run<V: SerializeRow + Send + Sync + 'static>(
        self,
        mut rx: mpsc::Receiver<(V, Waiter)>,
    ) {
        loop {
            // A permit first, then the rows: while every permitted batch is in flight, rows
            // queue up and the next batch takes them all (group commit: batches grow with
            // the load instead of staying at what one linger gathers).
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                return;
            };
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut rows = vec![first];
            while rows.len() < self.settings.max_rows {
                match rx.try_recv() {
                    Ok(row) => rows.push(row),
                    Err(_) => break,
                }
            }
            let linger = tokio::time::sleep(self.settings.linger);
            tokio::pin!(linger);
            while rows.len() < self.settings.max_rows {
                tokio::select! {
                    biased;
                    more = rx.recv() => match more {
                        Some(row) => rows.push(row),
                        None => break,
                    },
                    _ = &mut linger => break,
                }
            }
            let (values, waiters): (Vec<V>, Vec<Waiter>) = rows.into_iter().unzip();
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in 0..values.len() {
                batch.append_statement(self.statement.clone());
            }
            batch.set_is_idempotent(true);
            batch.set_request_timeout(Some(self.settings.timeout));
            self.metrics
                .cql_statements
                .with_label_values(&["batch"])
                .inc();
            self.metrics
                .cql_batched_rows
                .with_label_values(&[self.table])
                .inc_by(values.len() as u64);
            let session = self.session.clone();
            tokio::spawn(async move {
                let result = session
                    .batch(&batch, values)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                for w in waiters {
                    let _ = w.send(result.clone());
                }
                drop(permit);
            });
        }
    }
}
