//! Named crash points for the fault suite (`NOTIFY_FAULT`), so a test can kill a processor
//! exactly inside a window a random SIGKILL rarely hits: between the provider call and the
//! ledger write, between the ledger write and the commit, between the offsets sent to the
//! transaction and its commit.
//!
//! `NOTIFY_FAULT=delivery.after_call:0.05,txn.before_commit:0.1` aborts the process (SIGABRT:
//! no destructor, no flush, no clean leave of the group, as SIGKILL) at each named point with
//! that probability. Unset (every deployment), a point costs one load of a static.
//!
//! A few points stand for a fault other than a crash; their caller asks [`hit`] and acts it out
//! (`rebalance.lose_assignment`: the consumer drops an assignment it was just given, as a
//! broker outage can leave one, with nothing consumed and the group none the wiser).

use std::sync::OnceLock;

/// The points [`point`] is called with.
pub const POINTS: &[&str] = &[
    "delivery.after_call",
    "delivery.after_ledger",
    "txn.before_commit",
    "rebalance.lose_assignment",
];

fn armed() -> &'static [(String, f64)] {
    static ARMED: OnceLock<Vec<(String, f64)>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("NOTIFY_FAULT")
            .map(|spec| parse(&spec))
            .unwrap_or_default()
    })
}

/// `name:probability` pairs separated by commas; a name alone means probability 1.
fn parse(spec: &str) -> Vec<(String, f64)> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once(':') {
            Some((name, p)) => (name.to_string(), p.parse().unwrap_or(0.0)),
            None => (s.to_string(), 1.0),
        })
        .collect()
}

/// Whether `NOTIFY_FAULT` names `name` and the dice say so.
pub fn hit(name: &str) -> bool {
    let armed = armed();
    if armed.is_empty() {
        return false;
    }
    let hit = armed
        .iter()
        .find(|(n, _)| n == name)
        .is_some_and(|(_, p)| rand::random::<f64>() < *p);
    if hit {
        eprintln!("NOTIFY_FAULT: {name}");
    }
    hit
}

/// Aborts the process here when `NOTIFY_FAULT` names `name` and the dice say so.
pub fn point(name: &str) {
    if hit(name) {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_points_with_probabilities() {
        assert_eq!(
            parse("delivery.after_call:0.25, txn.before_commit"),
            vec![
                ("delivery.after_call".to_string(), 0.25),
                ("txn.before_commit".to_string(), 1.0)
            ]
        );
        assert!(parse("").is_empty());
    }
}
