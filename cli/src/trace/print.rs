//! The readable form of a trace: the steps in time order, then the delivery ledger.

use super::Trace;

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub fn table(t: &Trace) {
    match &t.user {
        Some(u) => println!("event {} for user {u}: {} steps", t.event_id, t.steps.len()),
        None => println!("event {}: {} steps", t.event_id, t.steps.len()),
    }
    println!(
        "{:<23} {:<11} {:<12} {:<17} {:<14} {:<6} {:<18} {:>3} REASON",
        "AT", "SOURCE", "STAGE", "WHAT", "USER", "CHAN", "RECIPIENT", "TRY"
    );
    for s in &t.steps {
        println!(
            "{:<23} {:<11} {:<12} {:<17} {:<14} {:<6} {:<18} {:>3} {}",
            time(s.at_ms),
            s.source,
            s.stage,
            s.what,
            s.user_id,
            s.channel.as_deref().unwrap_or("-"),
            s.recipient.as_deref().unwrap_or("-"),
            s.attempt.map_or("-".into(), |a| a.to_string()),
            s.reason.as_deref().unwrap_or("")
        );
    }
    println!();
    if let Some(e) = &t.ledger_error {
        println!("delivery ledger: not read ({e})");
        return;
    }
    if t.ledger.is_empty() {
        println!(
            "delivery ledger: no rows (no message of this event reached a delivery processor)"
        );
        return;
    }
    println!("delivery ledger:");
    println!(
        "{:<14} {:<6} {:<18} {:<14} {:>3} {:<23} {:<24} REASON",
        "USER", "CHAN", "RECIPIENT", "STATE", "TRY", "UPDATED", "PROVIDER ID"
    );
    for r in &t.ledger {
        println!(
            "{:<14} {:<6} {:<18} {:<14} {:>3} {:<23} {:<24} {}",
            r.user_id,
            r.channel,
            r.recipient,
            r.state,
            r.attempt.map_or("-".into(), |a| a.to_string()),
            r.updated_at_ms.map_or("-".into(), time),
            r.provider_id.as_deref().unwrap_or("-"),
            r.reason.as_deref().unwrap_or("")
        );
    }
}
