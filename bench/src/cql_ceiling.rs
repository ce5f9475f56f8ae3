//! The CQL ceiling: what the CQL database on this machine does at full concurrency with the
//! pipeline's own rows, so the pipeline's CQL work can be stated as a share of it (as Kafka's
//! perf tools are the broker's ceiling). Cassandra's own `cassandra-stress` would be the
//! reference tool, but Maven Central serves no `org.apache.cassandra:cassandra-stress` artifact
//! (5.0.6, 5.0.5, 4.1.10 and 4.0.17 tried: "Could not find artifact") and `cassandra-all`
//! does not carry its classes; the harness therefore drives the database itself, with the
//! delivery ledger's table and statements: group-committed unlogged batches (the ledger's and
//! dedup's write path), single-row writes and point reads by key.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;

use crate::pipeline::cpu;

/// Statements in flight at once (the pipeline's processors together keep about as many).
pub const CONCURRENCY: usize = 64;
/// Rows per batch: about what the ledger's group commit gathers at full load.
const BATCH_ROWS: usize = 16;

#[derive(Debug, Clone)]
pub struct CqlWorkload {
    pub label: &'static str,
    pub rows: u64,
    pub statements: u64,
    pub seconds: f64,
    /// CPU of the CQL database process over the run, µs per row.
    pub db_us_per_row: f64,
    /// CPU of the whole machine over the run, µs per row (the load generator included).
    pub machine_us_per_row: f64,
}

impl CqlWorkload {
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }
}

/// Runs the three workloads of `rows` rows each in a private keyspace, dropped afterwards.
pub async fn measure(run_id: &str, rows: u64) -> anyhow::Result<Vec<CqlWorkload>> {
    let db = cpu::stack_processes()
        .into_iter()
        .find(|t| t.label == "Cassandra")
        .context("no Cassandra process on this machine to measure")?;
    let mut config = notify_runtime::Config::load(None)?;
    config.cql.keyspace = format!("bench_{run_id}_cql");
    let session = Arc::new(notify_runtime::cql::connect(&config.cql).await?);
    notify_runtime::cql::migrate(&session, &config.cql).await?;
    let ks = &config.cql.keyspace;
    let insert = session
        .prepare(format!(
            "INSERT INTO {ks}.delivery_messages (event_id, user_id, channel, recipient, state, \
             epoch, kafka_partition, kafka_offset, attempt, provider_id, reason, updated_at) \
             VALUES (?, ?, ?, ?, 'sent', 1, ?, ?, 0, ?, '', ?)"
        ))
        .await?;
    let select = session
        .prepare(format!(
            "SELECT state, epoch FROM {ks}.delivery_messages WHERE event_id = ? AND user_id = ? \
             AND channel = ? AND recipient = ?"
        ))
        .await?;
    let mut out = Vec::new();
    for (label, kind) in [
        ("unlogged batches of 16 rows", Kind::Batch),
        ("one row per write", Kind::Write),
        ("point read by key", Kind::Read),
    ] {
        tracing::info!(label, rows, "CQL ceiling");
        let before = cpu::sample(std::slice::from_ref(&db));
        let started = Instant::now();
        let statements = drive(&session, &insert, &select, kind, rows).await?;
        let seconds = started.elapsed().as_secs_f64();
        let after = cpu::sample(std::slice::from_ref(&db));
        let per_row = |s: f64| 1e6 * s / rows.max(1) as f64;
        out.push(CqlWorkload {
            label,
            rows,
            statements,
            seconds,
            db_us_per_row: per_row(after.per_process[0] - before.per_process[0]),
            machine_us_per_row: per_row(after.machine_busy_s - before.machine_busy_s),
        });
    }
    if let Err(e) = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ())
        .await
    {
        tracing::warn!(error = %e, keyspace = %ks, "dropping the CQL ceiling keyspace");
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Batch,
    Write,
    Read,
}

/// Values of row `i`: each row its own partition (an event id), as the ledger's are.
fn row(
    i: u64,
) -> (
    String,
    String,
    &'static str,
    String,
    i32,
    i64,
    String,
    CqlTimestamp,
) {
    (
        format!("evt-{i:012}"),
        format!("user-{}", i % 5_000),
        "apns",
        format!("token-{i:08x}"),
        (i % 8) as i32,
        i as i64,
        format!("apns-{i}"),
        CqlTimestamp(notify_runtime::now_ms()),
    )
}

/// `rows` rows of `kind` from CONCURRENCY workers, each its own share in sequence; the
/// statements sent.
async fn drive(
    session: &Arc<Session>,
    insert: &PreparedStatement,
    select: &PreparedStatement,
    kind: Kind,
    rows: u64,
) -> anyhow::Result<u64> {
    let per_statement = if kind == Kind::Batch { BATCH_ROWS } else { 1 } as u64;
    let statements = rows.div_ceil(per_statement);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..CONCURRENCY as u64 {
        let (session, insert, select) = (session.clone(), insert.clone(), select.clone());
        workers.spawn(async move {
            let mut s = w;
            while s < statements {
                let first = s * per_statement;
                let last = (first + per_statement).min(rows);
                match kind {
                    Kind::Batch => {
                        let mut batch = Batch::new(BatchType::Unlogged);
                        let mut values = Vec::new();
                        for i in first..last {
                            batch.append_statement(insert.clone());
                            values.push(row(i));
                        }
                        session.batch(&batch, values).await?;
                    }
                    Kind::Write => {
                        session.execute_unpaged(&insert, row(first)).await?;
                    }
                    Kind::Read => {
                        let (event, user, channel, recipient, ..) = row(first);
                        session
                            .execute_unpaged(&select, (event, user, channel, recipient))
                            .await?;
                    }
                }
                s += CONCURRENCY as u64;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a CQL ceiling worker panicked")??;
    }
    Ok(statements)
}
