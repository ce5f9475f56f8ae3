//! The ledger of accepted event ids: a trait, the CQL implementation (LWT, TTL = window)
//! and an in-memory one for unit tests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

/// What a record asks the ledger: "let me be the one that forwards `event_id`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub event_id: String,
    /// The input record (`topic/partition/offset`) that claims the id.
    pub owner: String,
    /// Where its downstream copy goes and a lower bound of the offset it lands at.
    pub out_partition: i32,
    pub scan_from: i64,
    pub at_ms: i64,
}

/// The ledger's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Nobody had the id: forward it.
    New,
    /// This very record claimed it before (re-read after a crash, a rebalance or a failed
    /// attempt): it may or may not have gone out; the row says where to look.
    Mine { out_partition: i32, scan_from: i64 },
    /// Another record holds the id: a duplicate. `at_ms` is when it was claimed.
    Taken { owner: String, at_ms: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database is unreachable or timed out: retry later, never guess.
    #[error("dedup ledger unavailable: {0}")]
    Unavailable(String),
}

/// A store of claimed event ids. Claims are atomic: of concurrent claims for one id exactly
/// one gets `New`.
pub trait Ledger: Send + Sync + 'static {
    fn claim(&self, claim: &Claim) -> impl Future<Output = Result<Claimed, LedgerError>> + Send;
}

/// Compares a stored row with the claim that found it.
pub fn classify(
    claim: &Claim,
    owner: String,
    out_partition: i32,
    scan_from: i64,
    at_ms: i64,
) -> Claimed {
    if owner == claim.owner {
        Claimed::Mine {
            out_partition,
            scan_from,
        }
    } else {
        Claimed::Taken { owner, at_ms }
    }
}

/// In-memory ledger for unit tests (expiry by the claim's clock).
pub struct MemoryLedger {
    window_ms: i64,
    rows: Mutex<HashMap<String, Claim>>,
}

impl MemoryLedger {
    pub fn new(window_ms: i64) -> MemoryLedger {
        MemoryLedger {
            window_ms,
            rows: Mutex::new(HashMap::new()),
        }
    }
}

impl Ledger for MemoryLedger {
    async fn claim(&self, claim: &Claim) -> Result<Claimed, LedgerError> {
        let mut rows = self
            .rows
            .lock()
            .map_err(|_| LedgerError::Unavailable("poisoned".into()))?;
        match rows.get(&claim.event_id) {
            Some(row) if row.at_ms + self.window_ms > claim.at_ms => Ok(classify(
                claim,
                row.owner.clone(),
                row.out_partition,
                row.scan_from,
                row.at_ms,
            )),
            _ => {
                rows.insert(claim.event_id.clone(), claim.clone());
                Ok(Claimed::New)
            }
        }
    }
}

/// The behaviour every ledger must have; run against the in-memory one (unit tests) and the
/// CQL one (integration tests). `prefix` keeps ids of different runs apart.
pub async fn conformance<L: Ledger>(ledger: &L, prefix: &str) -> Result<(), String> {
    let claim = |id: &str, owner: &str| Claim {
        event_id: format!("{prefix}{id}"),
        owner: owner.to_string(),
        out_partition: 3,
        scan_from: 42,
        at_ms: 1_000,
    };
    let check = |what: &str, got: Claimed, want: Claimed| {
        if got == want {
            Ok(())
        } else {
            Err(format!("{what}: got {got:?}, want {want:?}"))
        }
    };
    let e = |e: LedgerError| e.to_string();
    check(
        "first claim",
        ledger.claim(&claim("a", "t/0/1")).await.map_err(e)?,
        Claimed::New,
    )?;
    check(
        "same record again",
        ledger.claim(&claim("a", "t/0/1")).await.map_err(e)?,
        Claimed::Mine {
            out_partition: 3,
            scan_from: 42,
        },
    )?;
    check(
        "another record",
        ledger.claim(&claim("a", "t/5/9")).await.map_err(e)?,
        Claimed::Taken {
            owner: "t/0/1".into(),
            at_ms: 1_000,
        },
    )?;
    check(
        "another id",
        ledger.claim(&claim("b", "t/5/9")).await.map_err(e)?,
        Claimed::New,
    )?;
    // Concurrent claims of one id by ten records: exactly one wins.
    let claims: Vec<Claim> = (0..10).map(|i| claim("c", &format!("t/{i}/0"))).collect();
    let answers = futures::future::join_all(claims.iter().map(|c| ledger.claim(c))).await;
    let mut new = 0;
    for a in answers {
        match a.map_err(e)? {
            Claimed::New => new += 1,
            Claimed::Taken { .. } => {}
            other => return Err(format!("concurrent claim answered {other:?}")),
        }
    }
    if new != 1 {
        return Err(format!("{new} concurrent claims won"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_ledger_conforms() {
        conformance(&MemoryLedger::new(60_000), "m-").await.unwrap();
    }

    #[tokio::test]
    async fn memory_ledger_forgets_after_the_window() {
        let l = MemoryLedger::new(100);
        let mut c = Claim {
            event_id: "x".into(),
            owner: "o1".into(),
            out_partition: 0,
            scan_from: 0,
            at_ms: 0,
        };
        assert_eq!(l.claim(&c).await.unwrap(), Claimed::New);
        c.owner = "o2".into();
        c.at_ms = 100;
        assert_eq!(l.claim(&c).await.unwrap(), Claimed::New);
    }
}
