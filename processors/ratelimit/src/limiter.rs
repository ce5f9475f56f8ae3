//! The sliding-window decision: a send passes when, for every rule that applies, fewer than
//! `max` sends were accepted in the `window` before now; a pass is recorded in every scope.
//!
//! Exact under redelivery: an event already recorded in any of its scopes was accepted
//! before (only accepted sends are recorded), so it passes again without counting twice, and
//! the scopes a crash left unwritten are completed. Records of one user arrive one at a time
//! (the input is keyed by user id), so check-then-record does not race within a partition.

use notify_runtime::records::Channel;

use crate::rules::{Rule, scopes_for};
use crate::store::{RateStore, Sent, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The first rule found full.
    Limited(Rule),
}

pub struct Limiter<S> {
    pub store: S,
    pub rules: Vec<Rule>,
}

impl<S: RateStore> Limiter<S> {
    pub async fn check(
        &self,
        user_id: &str,
        category: &str,
        channel: Channel,
        event_id: &str,
        now_ms: i64,
    ) -> Result<Verdict, StoreError> {
        let scopes = scopes_for(&self.rules, channel, category);
        if scopes.is_empty() {
            return Ok(Verdict::Pass);
        }
        let mut held = Vec::with_capacity(scopes.len());
        for (scope, (rules, ttl)) in &scopes {
            let sent = self.store.sent(user_id, scope).await?;
            held.push((scope, rules, *ttl, sent));
        }
        let seen = |sent: &[Sent]| sent.iter().any(|s| s.event_id == event_id);
        let accepted_before = held.iter().any(|(_, _, _, sent)| seen(sent));
        if !accepted_before {
            for (_, rules, _, sent) in &held {
                for rule in rules.iter() {
                    let from = now_ms.saturating_sub(rule.window_ms());
                    let in_window = sent.iter().filter(|s| s.at_ms > from).count();
                    if in_window as u64 >= u64::from(rule.max) {
                        return Ok(Verdict::Limited((*rule).clone()));
                    }
                }
            }
        }
        let entry = Sent {
            event_id: event_id.to_string(),
            at_ms: now_ms,
        };
        for (scope, _, ttl, sent) in &held {
            if !seen(sent) {
                self.store.record(user_id, scope, &entry, *ttl).await?;
            }
        }
        Ok(Verdict::Pass)
    }
}

/// The decision rules, run against any store (memory here, CQL in the integration tests).
pub async fn limiter_contract<S: RateStore>(store: S, user: &str) {
    let rules = vec![
        Rule {
            channel: Some(Channel::Push),
            category: None,
            max: 3,
            window_secs: 3600,
        },
        Rule {
            channel: Some(Channel::Sms),
            category: Some("marketing".into()),
            max: 1,
            window_secs: 86400,
        },
    ];
    let limiter = Limiter { store, rules };
    let t0 = notify_runtime::now_ms();
    let push = |id: String, at: i64| {
        let limiter = &limiter;
        async move {
            limiter
                .check(user, "billing", Channel::Push, &id, at)
                .await
                .unwrap()
        }
    };
    for i in 0..3 {
        assert_eq!(push(format!("p{i}"), t0 + i).await, Verdict::Pass, "p{i}");
    }
    assert!(matches!(
        push("p3".into(), t0 + 3).await,
        Verdict::Limited(_)
    ));
    // A redelivered accepted record passes again and does not take a slot.
    assert_eq!(push("p1".into(), t0 + 4).await, Verdict::Pass);
    assert!(matches!(
        push("p4".into(), t0 + 5).await,
        Verdict::Limited(_)
    ));
    // The window slides: an hour after the first send, one slot is free again.
    assert_eq!(push("p5".into(), t0 + 3_600_000).await, Verdict::Pass);
    assert!(matches!(
        push("p6".into(), t0 + 3_600_000).await,
        Verdict::Limited(_)
    ));
    // Other channels and categories have their own counters; e-mail has no rule.
    let check = |cat: &'static str, ch, id: &'static str| limiter.check(user, cat, ch, id, t0);
    assert_eq!(
        check("marketing", Channel::Sms, "s1").await.unwrap(),
        Verdict::Pass
    );
    assert!(matches!(
        check("marketing", Channel::Sms, "s2").await.unwrap(),
        Verdict::Limited(_)
    ));
    assert_eq!(
        check("billing", Channel::Sms, "s3").await.unwrap(),
        Verdict::Pass
    );
    for i in 0..5 {
        let id = format!("m{i}");
        assert_eq!(
            limiter
                .check(user, "billing", Channel::Email, &id, t0)
                .await
                .unwrap(),
            Verdict::Pass
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn sliding_windows_over_the_memory_store() {
        limiter_contract(MemoryStore::default(), "u1").await;
    }

    #[tokio::test]
    async fn a_send_recorded_in_only_some_scopes_is_completed_not_limited() {
        // A crash between the writes of two scopes: the redelivery must pass and fill the gap.
        let store = MemoryStore::default();
        let rules = vec![
            Rule {
                channel: Some(Channel::Push),
                category: None,
                max: 1,
                window_secs: 60,
            },
            Rule {
                channel: None,
                category: Some("news".into()),
                max: 1,
                window_secs: 60,
            },
        ];
        let sent = Sent {
            event_id: "e1".into(),
            at_ms: 1_000,
        };
        store.record("u", "channel=PUSH", &sent, 60).await.unwrap();
        let limiter = Limiter {
            store: store.clone(),
            rules,
        };
        assert_eq!(
            limiter
                .check("u", "news", Channel::Push, "e1", 2_000)
                .await
                .unwrap(),
            Verdict::Pass
        );
        assert_eq!(
            store
                .sent("u", "category=news/channel=*")
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(matches!(
            limiter.check("u", "news", Channel::Email, "e2", 3_000).await.unwrap(),
            Verdict::Limited(r) if r.category.as_deref() == Some("news")
        ));
    }
}
