//! The delivery ledger: one row per message (event, user, channel, contact point) saying
//! whether the provider may have been called and with what result, so a record consumed again
//! (a crash, a rebalance, a replay, a redrive) never calls the provider twice.
//!
//! No Paxos round per message, and one row write per message. The owner of a channel
//! partition is the only writer of the rows of its messages (a message's key, the contact
//! point, always lands on the same partition). Before the call it claims the record's offset
//! for its epoch and checks that the epoch is still the partition's (see `ownership`: one
//! shared round for all records waiting); after the call it writes the outcome, a plain write
//! batched with other messages'. A new owner reads the rows only for the records that an
//! earlier owner claimed: a claimed record without a row may be in flight (in doubt). Rows in
//! state `claimed` were written per message by earlier versions and are still understood.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

/// Which message a row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub event_id: String,
    pub user_id: String,
    /// `APNS`, `FCM`, `SMS`, `EMAIL`.
    pub channel: String,
    /// The full contact point (device token, number, address); the ledger is internal.
    pub recipient: String,
}

/// A row's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The provider may be called (or is being called) by the owner of `epoch`.
    Claimed,
    Sent,
    Failed,
    TokenInvalid,
    /// Handed to the retry ladder: a later attempt claims it again.
    Retrying,
    /// A claim without an outcome, or a call whose answer never came: the provider may have
    /// the message. Not resent unless the channel's policy says so or an operator forces it.
    InDoubt,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Claimed,
        State::Sent,
        State::Failed,
        State::TokenInvalid,
        State::Retrying,
        State::InDoubt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Claimed => "claimed",
            State::Sent => "sent",
            State::Failed => "failed",
            State::TokenInvalid => "token_invalid",
            State::Retrying => "retrying",
            State::InDoubt => "in_doubt",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Nothing more will be sent for this message (without an operator's `--force`).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Sent | State::Failed | State::TokenInvalid | State::InDoubt
        )
    }
}

/// One row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub state: State,
    /// The owner's epoch that wrote it.
    pub epoch: i64,
    pub partition: i32,
    pub offset: i64,
    pub attempt: i32,
    pub provider_id: String,
    pub reason: String,
    pub updated_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("delivery ledger unavailable: {0}")]
    Unavailable(String),
    #[error("delivery ledger row is malformed: {0}")]
    Malformed(String),
}

/// The ledger's operations; CQL in production, memory in unit tests.
pub trait DeliveryLedger: Send + Sync + 'static {
    /// The row of `key`, if any.
    fn read(
        &self,
        key: &MessageKey,
    ) -> impl Future<Output = Result<Option<Row>, LedgerError>> + Send;

    /// Writes `row` for `key` (claims and outcomes alike); returns once it is durable.
    fn write(
        &self,
        key: &MessageKey,
        row: Row,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

/// The ledger in memory, for unit tests and tools.
#[derive(Default)]
pub struct MemoryLedger {
    rows: Mutex<HashMap<MessageKey, Row>>,
    pub reads: std::sync::atomic::AtomicU64,
}

impl MemoryLedger {
    pub fn row(&self, key: &MessageKey) -> Option<Row> {
        self.rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

impl DeliveryLedger for MemoryLedger {
    async fn read(&self, key: &MessageKey) -> Result<Option<Row>, LedgerError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.row(key))
    }

    async fn write(&self, key: &MessageKey, row: Row) -> Result<(), LedgerError> {
        self.rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), row);
        Ok(())
    }
}

/// What every ledger must do; run against memory here and against CQL by the integration
/// tests. Panics on a violation.
pub async fn check_ledger_contract(ledger: &impl DeliveryLedger, event_id: &str) {
    let key = MessageKey {
        event_id: event_id.into(),
        user_id: "u1".into(),
        channel: "APNS".into(),
        recipient: "device-1".into(),
    };
    assert_eq!(ledger.read(&key).await.expect("read"), None);
    let claim = Row {
        state: State::Claimed,
        epoch: 3,
        partition: 2,
        offset: 41,
        attempt: 1,
        provider_id: String::new(),
        reason: String::new(),
        updated_at_ms: 1_700_000_000_000,
    };
    ledger.write(&key, claim.clone()).await.expect("claim");
    assert_eq!(ledger.read(&key).await.expect("read"), Some(claim.clone()));
    let sent = Row {
        state: State::Sent,
        provider_id: "p-1".into(),
        updated_at_ms: claim.updated_at_ms + 5,
        ..claim.clone()
    };
    ledger.write(&key, sent.clone()).await.expect("outcome");
    assert_eq!(ledger.read(&key).await.expect("read"), Some(sent));
    let other_user = MessageKey {
        user_id: "u2".into(),
        ..key.clone()
    };
    assert_eq!(
        ledger.read(&other_user).await.expect("read"),
        None,
        "the same event id for another user is another message"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_ledger_keeps_the_contract() {
        check_ledger_contract(&MemoryLedger::default(), "e1").await;
    }
}
