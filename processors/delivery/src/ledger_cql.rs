//! The delivery ledger in CQL (`delivery_messages`, migration 0007): plain writes, batched
//! with other messages' (group commit), and a point read only where a row may exist.

use std::sync::Arc;
use std::time::Duration;

use notify_runtime::Metrics;
use notify_runtime::cql::{BatchSettings, BatchWriter};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;

use crate::ledger::{DeliveryLedger, LedgerError, MessageKey, Row, State};

type Values = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i32,
    i64,
    i32,
    String,
    String,
    CqlTimestamp,
);

pub struct CqlLedger {
    session: Arc<Session>,
    select: PreparedStatement,
    writer: BatchWriter<Values>,
    metrics: Metrics,
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

impl CqlLedger {
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Result<CqlLedger, LedgerError> {
        let table = format!("{keyspace}.delivery_messages");
        let mut select = session
            .prepare(format!(
                "SELECT state, epoch, kafka_partition, kafka_offset, attempt, provider_id, reason, \
                 updated_at FROM {table} WHERE event_id = ? AND user_id = ? AND channel = ? \
                 AND recipient = ?"
            ))
            .await
            .map_err(unavailable)?;
        select.set_request_timeout(Some(timeout));
        select.set_is_idempotent(true);
        let insert = session
            .prepare(format!(
                "INSERT INTO {table} (event_id, user_id, channel, recipient, state, epoch, \
                 kafka_partition, kafka_offset, attempt, provider_id, reason, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await
            .map_err(unavailable)?;
        let batch = BatchSettings {
            timeout,
            ..BatchSettings::default()
        };
        let writer = BatchWriter::new(session.clone(), insert, "delivery_messages", batch, metrics);
        Ok(CqlLedger {
            session,
            select,
            writer,
            metrics: metrics.clone(),
        })
    }
}

type Selected = (
    Option<String>,
    Option<i64>,
    Option<i32>,
    Option<i64>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<CqlTimestamp>,
);

fn parse(
    result: scylla::response::query_result::QueryResult,
    key: &MessageKey,
) -> Result<Option<Row>, LedgerError> {
    let row = result
        .into_rows_result()
        .map_err(unavailable)?
        .maybe_first_row::<Selected>()
        .map_err(unavailable)?;
    let Some((state, epoch, partition, offset, attempt, provider_id, reason, at)) = row else {
        return Ok(None);
    };
    let state = state.unwrap_or_default();
    let state = State::parse(&state)
        .ok_or_else(|| LedgerError::Malformed(format!("state {state:?} of {}", key.event_id)))?;
    Ok(Some(Row {
        state,
        epoch: epoch.unwrap_or(0),
        partition: partition.unwrap_or(-1),
        offset: offset.unwrap_or(-1),
        attempt: attempt.unwrap_or(0),
        provider_id: provider_id.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
        updated_at_ms: at.map(|t| t.0).unwrap_or(0),
    }))
}

/// One row, read without preparing anything (tools and tests).
pub async fn read_row(
    session: &Session,
    keyspace: &str,
    key: &MessageKey,
) -> Result<Option<Row>, LedgerError> {
    let result = session
        .query_unpaged(
            format!(
                "SELECT state, epoch, kafka_partition, kafka_offset, attempt, provider_id, \
                 reason, updated_at FROM {keyspace}.delivery_messages WHERE event_id = ? \
                 AND user_id = ? AND channel = ? AND recipient = ?"
            ),
            (&key.event_id, &key.user_id, &key.channel, &key.recipient),
        )
        .await
        .map_err(unavailable)?;
    parse(result, key)
}

impl DeliveryLedger for CqlLedger {
    async fn read(&self, key: &MessageKey) -> Result<Option<Row>, LedgerError> {
        self.metrics
            .cql_statements
            .with_label_values(&["read"])
            .inc();
        let result = self
            .session
            .execute_unpaged(
                &self.select,
                (&key.event_id, &key.user_id, &key.channel, &key.recipient),
            )
            .await
            .map_err(unavailable)?;
        parse(result, key)
    }

    async fn write(&self, key: &MessageKey, row: Row) -> Result<(), LedgerError> {
        self.writer
            .write((
                key.event_id.clone(),
                key.user_id.clone(),
                key.channel.clone(),
                key.recipient.clone(),
                row.state.as_str().to_string(),
                row.epoch,
                row.partition,
                row.offset,
                row.attempt,
                row.provider_id,
                row.reason,
                CqlTimestamp(row.updated_at_ms),
            ))
            .await
            .map_err(unavailable)
    }
}
