//! The delivery ledger: one row per (event, channel, contact point) that says whether the
//! provider has been called and with what result, so a record consumed again after a crash,
//! a rebalance or a replay is not sent again.
//!
//! Protocol: before the provider call a sender *claims* the row (state `sending`, a fresh
//! attempt token, a lease). After the call it *finishes* the row (`sent`, `failed`,
//! `token_invalid`) or *releases* it (retryable: the retry ladder claims it again later).
//! Finish and release are fenced by the attempt token, so a sender whose lease ran out and
//! was taken over cannot overwrite the newer attempt.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

/// Which delivery a row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LedgerKey {
    pub event_id: String,
    /// `APNS`, `FCM`, `SMS`, `EMAIL`.
    pub channel: String,
    /// The full contact point (device token, number, address); the ledger is internal.
    pub recipient: String,
}

/// A row's final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalState {
    Sent,
    Failed,
    TokenInvalid,
}

impl FinalState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::TokenInvalid => "token_invalid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Sent, Self::Failed, Self::TokenInvalid]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// The state name of a claimed row.
pub const SENDING: &str = "sending";

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This attempt owns the provider call. `claims` counts claims of the row: above 1 means
    /// an earlier attempt crashed (or lost its lease) in the window between call and finish.
    Claimed { claims: i32 },
    /// Already done; do not call the provider.
    Finished {
        state: FinalState,
        provider_id: String,
    },
    /// Another attempt holds an unexpired lease (it may be in the provider call right now).
    Busy { lease_left_ms: i64 },
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
    /// Claims the row for the attempt `token`, taking over a `sending` row whose lease
    /// (`lease_ms` after its claim) has run out.
    fn claim(
        &self,
        key: &LedgerKey,
        token: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Claim, LedgerError>> + Send;

    /// Records the final state if `token` still holds the row; false when it was taken over.
    fn finish(
        &self,
        key: &LedgerKey,
        token: &str,
        state: FinalState,
        provider_id: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Forgets the claim of `token` (a retryable failure: the retry ladder claims again).
    fn release(
        &self,
        key: &LedgerKey,
        token: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

/// One row as both implementations see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub state: String,
    pub attempt_token: String,
    pub claimed_at: i64,
    pub claims: i32,
    pub provider_id: String,
}

/// What to do with an existing row: a final answer, or take it over (`Some(row)` to fence on).
pub(crate) fn judge(row: &Row, now_ms: i64, lease_ms: i64) -> Result<Claim, Row> {
    if let Some(state) = FinalState::parse(&row.state) {
        return Ok(Claim::Finished {
            state,
            provider_id: row.provider_id.clone(),
        });
    }
    let lease_left_ms = row.claimed_at + lease_ms - now_ms;
    if lease_left_ms > 0 {
        return Ok(Claim::Busy { lease_left_ms });
    }
    Err(row.clone())
}

/// The ledger in memory, for unit tests and tools.
#[derive(Default)]
pub struct MemoryLedger {
    rows: Mutex<HashMap<LedgerKey, Row>>,
}

impl MemoryLedger {
    pub fn row(&self, key: &LedgerKey) -> Option<Row> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LedgerKey, Row>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DeliveryLedger for MemoryLedger {
    async fn claim(
        &self,
        key: &LedgerKey,
        token: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Claim, LedgerError> {
        let mut rows = self.lock();
        let claims = match rows.get(key) {
            None => 1,
            Some(row) => match judge(row, now_ms, lease_ms) {
                Ok(found) => return Ok(found),
                Err(old) => old.claims + 1,
            },
        };
        rows.insert(
            key.clone(),
            Row {
                state: SENDING.into(),
                attempt_token: token.into(),
                claimed_at: now_ms,
                claims,
                provider_id: String::new(),
            },
        );
        Ok(Claim::Claimed { claims })
    }

    async fn finish(
        &self,
        key: &LedgerKey,
        token: &str,
        state: FinalState,
        provider_id: &str,
        _now_ms: i64,
    ) -> Result<bool, LedgerError> {
        let mut rows = self.lock();
        match rows.get_mut(key) {
            Some(row) if row.attempt_token == token => {
                row.state = state.as_str().into();
                row.provider_id = provider_id.into();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, key: &LedgerKey, token: &str) -> Result<(), LedgerError> {
        let mut rows = self.lock();
        if rows.get(key).is_some_and(|r| r.attempt_token == token) {
            rows.remove(key);
        }
        Ok(())
    }
}

/// The behaviour every ledger must have; run against memory here and against CQL by the
/// integration tests. Panics on a violation. Times are realistic: a finish comes after its
/// claim, and one inside half the lease cannot have been taken over (a ledger may then skip
/// the fence, as the CQL one does); one after it must be fenced.
pub async fn check_ledger_contract(ledger: &impl DeliveryLedger, event_id: &str) {
    let key = LedgerKey {
        event_id: event_id.into(),
        channel: "APNS".into(),
        recipient: "device-1".into(),
    };
    let lease = 1_000;
    let t0 = 1_700_000_000_000;
    let first = ledger.claim(&key, "a", t0, lease).await.unwrap();
    assert_eq!(first, Claim::Claimed { claims: 1 });
    // A second consumer inside the lease must wait.
    let busy = ledger.claim(&key, "b", t0 + 10, lease).await.unwrap();
    assert_eq!(busy, Claim::Busy { lease_left_ms: 990 });
    // After the lease, the row is taken over and the first attempt is fenced off.
    let taken = ledger
        .claim(&key, "b", t0 + lease + 1, lease)
        .await
        .unwrap();
    assert_eq!(taken, Claim::Claimed { claims: 2 });
    // The first attempt comes back after its lease: fenced off.
    assert!(
        !ledger
            .finish(&key, "a", FinalState::Sent, "p-a", t0 + lease + 2)
            .await
            .unwrap()
    );
    // The taker finishes well inside its own lease.
    assert!(
        ledger
            .finish(&key, "b", FinalState::Sent, "p-b", t0 + lease + 3)
            .await
            .unwrap()
    );
    let done = ledger
        .claim(&key, "c", t0 + 10 * lease, lease)
        .await
        .unwrap();
    assert_eq!(
        done,
        Claim::Finished {
            state: FinalState::Sent,
            provider_id: "p-b".into()
        }
    );
    // Release (retryable) lets the next attempt claim at once; a stale token releases nothing.
    let other = LedgerKey {
        recipient: "device-2".into(),
        ..key.clone()
    };
    assert_eq!(
        ledger.claim(&other, "x", t0, lease).await.unwrap(),
        Claim::Claimed { claims: 1 }
    );
    ledger.release(&other, "stale").await.unwrap();
    assert!(matches!(
        ledger.claim(&other, "y", t0 + 1, lease).await.unwrap(),
        Claim::Busy { .. }
    ));
    ledger.release(&other, "x").await.unwrap();
    assert_eq!(
        ledger.claim(&other, "y", t0 + 2, lease).await.unwrap(),
        Claim::Claimed { claims: 1 }
    );
    // A finish late in its lease (not taken over) still lands, through the fence.
    assert!(
        ledger
            .finish(
                &other,
                "y",
                FinalState::TokenInvalid,
                "",
                t0 + 2 + lease - 1
            )
            .await
            .unwrap()
    );
    assert!(matches!(
        ledger.claim(&other, "z", t0 + 3, lease).await.unwrap(),
        Claim::Finished {
            state: FinalState::TokenInvalid,
            ..
        }
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_ledger_keeps_the_contract() {
        check_ledger_contract(&MemoryLedger::default(), "e1").await;
    }
}
