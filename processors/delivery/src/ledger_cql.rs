//! The delivery ledger in the CQL database, with lightweight transactions (Paxos) so that two
//! consumers of the same record (rebalance, replay) cannot both claim it.
//!
//! The claim is always a lightweight transaction. The finish is one only when it might race a
//! take-over: a sender that finishes within half the lease of its own claim (by the same
//! clocks the lease is judged by) cannot have been taken over, since a taker waits for the
//! whole lease, so it writes the outcome with a plain write to the `final_*` columns (migration
//! 0006), saving a Paxos round per message. This assumes the senders' clocks differ by less
//! than half the lease (15 s by default). Later finishes stay fenced by the attempt token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use notify_runtime::config::CqlConfig;
use scylla::client::session::Session;
use scylla::response::query_result::QueryResult;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row as CqlRow};

use crate::ledger::{
    Claim, DeliveryLedger, FinalState, LedgerError, LedgerKey, Row, SENDING, judge,
};

pub struct CqlLedger {
    session: Arc<Session>,
    insert: PreparedStatement,
    take_over: PreparedStatement,
    finish: PreparedStatement,
    finish_plain: PreparedStatement,
    release: PreparedStatement,
    /// Claims made here and not yet finished: attempt token -> (claimed at, lease), ms.
    claimed: Mutex<HashMap<String, (i64, i64)>>,
}

const COLUMNS: &str =
    "state, attempt_token, claimed_at, claims, provider_id, final_state, final_provider_id";

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

impl CqlLedger {
    /// Connects and prepares the statements (the table comes from `notify db migrate`).
    pub async fn connect(config: &CqlConfig) -> Result<Self, LedgerError> {
        let session = notify_runtime::cql::connect(config)
            .await
            .map_err(unavailable)?;
        Self::new(Arc::new(session), &config.keyspace).await
    }

    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self, LedgerError> {
        let t = format!("{keyspace}.delivery_ledger");
        let key = "event_id = ? AND channel = ? AND recipient = ?";
        let prepare = |text: String| {
            let session = session.clone();
            async move { session.prepare(text).await.map_err(unavailable) }
        };
        Ok(Self {
            insert: prepare(format!(
                "INSERT INTO {t} (event_id, channel, recipient, state, attempt_token, claimed_at, \
                 claims, provider_id, updated_at) VALUES (?, ?, ?, '{SENDING}', ?, ?, 1, '', ?) \
                 IF NOT EXISTS"
            ))
            .await?,
            take_over: prepare(format!(
                "UPDATE {t} SET attempt_token = ?, claimed_at = ?, claims = ?, updated_at = ? \
                 WHERE {key} IF state = '{SENDING}' AND attempt_token = ? AND final_state = null"
            ))
            .await?,
            finish_plain: prepare(format!(
                "UPDATE {t} SET final_state = ?, final_provider_id = ?, final_at = ? WHERE {key}"
            ))
            .await?,
            finish: prepare(format!(
                "UPDATE {t} SET state = ?, provider_id = ?, updated_at = ? WHERE {key} \
                 IF attempt_token = ?"
            ))
            .await?,
            release: prepare(format!("DELETE FROM {t} WHERE {key} IF attempt_token = ?")).await?,
            session,
            claimed: Mutex::default(),
        })
    }

    fn remember(&self, token: &str, now_ms: i64, lease_ms: i64) {
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        // Claims never finished here (the record was given up) are forgotten after their lease.
        if claimed.len() > 10_000 {
            claimed.retain(|_, (at, lease)| *at + *lease > now_ms);
        }
        claimed.insert(token.to_string(), (now_ms, lease_ms));
    }

    /// True when `token` was claimed here less than half its lease before `now_ms`.
    fn inside_half_lease(&self, token: &str, now_ms: i64) -> bool {
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        claimed
            .remove(token)
            .is_some_and(|(at, lease)| now_ms >= at && now_ms - at < lease / 2)
    }
}

/// `[applied]` of an LWT answer, and the row it found when not applied.
fn lwt_answer(result: QueryResult) -> Result<(bool, Option<Row>), LedgerError> {
    let rows = result
        .into_rows_result()
        .map_err(|e| LedgerError::Malformed(e.to_string()))?;
    let specs = rows.column_specs();
    let index = |name: &str| specs.get_by_name(name).map(|(i, _)| i);
    let names = [
        "[applied]",
        "state",
        "attempt_token",
        "claimed_at",
        "claims",
        "provider_id",
        "final_state",
        "final_provider_id",
    ];
    let idx: Vec<Option<usize>> = names.iter().map(|n| index(n)).collect();
    let row: CqlRow = rows
        .single_row()
        .map_err(|e| LedgerError::Malformed(e.to_string()))?;
    let col = |i: usize| idx[i].and_then(|i| row.columns.get(i).cloned().flatten());
    let applied = matches!(col(0), Some(CqlValue::Boolean(true)));
    let text = |v: Option<CqlValue>| match v {
        Some(CqlValue::Text(s)) | Some(CqlValue::Ascii(s)) => s,
        _ => String::new(),
    };
    let found = col(1).map(|state| {
        let stored = Row {
            state: text(Some(state)),
            attempt_token: text(col(2)),
            claimed_at: match col(3) {
                Some(CqlValue::BigInt(v)) => v,
                _ => 0,
            },
            claims: match col(4) {
                Some(CqlValue::Int(v)) => v,
                _ => 1,
            },
            provider_id: text(col(5)),
        };
        with_final(
            stored,
            col(6).map(|v| text(Some(v))),
            col(7).map(|v| text(Some(v))),
        )
    });
    Ok((applied, found))
}

/// A row as the rules see it: a plainly written final state is the row's state.
fn with_final(mut row: Row, final_state: Option<String>, final_provider: Option<String>) -> Row {
    if let Some(state) = final_state.filter(|s| !s.is_empty()) {
        row.state = state;
        row.provider_id = final_provider.unwrap_or_default();
    }
    row
}

impl DeliveryLedger for CqlLedger {
    async fn claim(
        &self,
        key: &LedgerKey,
        token: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Claim, LedgerError> {
        let k = (&key.event_id, &key.channel, &key.recipient);
        let inserted = self
            .session
            .execute_unpaged(&self.insert, (k.0, k.1, k.2, token, now_ms, now_ms))
            .await
            .map_err(unavailable)?;
        let (applied, mut found) = lwt_answer(inserted)?;
        if applied {
            self.remember(token, now_ms, lease_ms);
            return Ok(Claim::Claimed { claims: 1 });
        }
        // Two rounds are enough: a lost take-over race leaves a row with a fresh lease.
        for _ in 0..2 {
            let Some(row) = found.take() else {
                return Err(LedgerError::Malformed(
                    "LWT insert not applied but no row returned".into(),
                ));
            };
            let old = match judge(&row, now_ms, lease_ms) {
                Ok(claim) => return Ok(claim),
                Err(old) => old,
            };
            let claims = old.claims + 1;
            let values = (
                token,
                now_ms,
                claims,
                now_ms,
                k.0,
                k.1,
                k.2,
                &old.attempt_token,
            );
            let updated = self
                .session
                .execute_unpaged(&self.take_over, values)
                .await
                .map_err(unavailable)?;
            let (applied, row) = lwt_answer(updated)?;
            if applied {
                self.remember(token, now_ms, lease_ms);
                return Ok(Claim::Claimed { claims });
            }
            found = row;
        }
        Ok(Claim::Busy {
            lease_left_ms: lease_ms,
        })
    }

    async fn finish(
        &self,
        key: &LedgerKey,
        token: &str,
        state: FinalState,
        provider_id: &str,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        let (s, p, k) = (state.as_str(), provider_id, key);
        if self.inside_half_lease(token, now_ms) {
            let values = (s, p, now_ms, &k.event_id, &k.channel, &k.recipient);
            if let Err(e) = self
                .session
                .execute_unpaged(&self.finish_plain, values)
                .await
            {
                // Retried by the caller, which may by then be past half the lease: fenced.
                self.remember(token, now_ms, 0);
                return Err(unavailable(e));
            }
            return Ok(true);
        }
        let values = (s, p, now_ms, &k.event_id, &k.channel, &k.recipient, token);
        let result = self
            .session
            .execute_unpaged(&self.finish, values)
            .await
            .map_err(unavailable)?;
        Ok(lwt_answer(result)?.0)
    }

    async fn release(&self, key: &LedgerKey, token: &str) -> Result<(), LedgerError> {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
        let values = (&key.event_id, &key.channel, &key.recipient, token);
        self.session
            .execute_unpaged(&self.release, values)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// A ledger row as selected: every column may be null.
type StoredRow = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Reads one row (tests and operators' tools).
pub async fn read_row(
    session: &Session,
    keyspace: &str,
    key: &LedgerKey,
) -> Result<Option<Row>, LedgerError> {
    let result = session
        .query_unpaged(
            format!(
                "SELECT {COLUMNS} FROM {keyspace}.delivery_ledger \
                 WHERE event_id = ? AND channel = ? AND recipient = ?"
            ),
            (&key.event_id, &key.channel, &key.recipient),
        )
        .await
        .map_err(unavailable)?
        .into_rows_result()
        .map_err(|e| LedgerError::Malformed(e.to_string()))?;
    let row: Option<StoredRow> = result
        .maybe_first_row()
        .map_err(|e| LedgerError::Malformed(e.to_string()))?;
    Ok(
        row.map(|(state, token, at, claims, pid, final_state, final_pid)| {
            let stored = Row {
                state: state.unwrap_or_default(),
                attempt_token: token.unwrap_or_default(),
                claimed_at: at.unwrap_or(0),
                claims: claims.unwrap_or(1),
                provider_id: pid.unwrap_or_default(),
            };
            with_final(stored, final_state, final_pid)
        }),
    )
}
