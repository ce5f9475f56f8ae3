//! The Grafana dashboard shipped in the chart (helm/notify/files/grafana-dashboard.json): the
//! metric names its queries use, checked against what processors export.

use std::collections::BTreeSet;

use notify_tests::repo_root;

/// Every query (`expr`) of the dashboard's panels.
pub fn queries() -> Vec<String> {
    let path = repo_root().join("helm/notify/files/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("dashboard JSON readable");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = json["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect()
}

/// The metric names of a PromQL expression: identifiers of our families and process metrics
/// outside quoted label values.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("notify_") || word.starts_with("process_") {
                out.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Names the dashboard queries that are not among `exported` families (a histogram's
/// `_bucket`, `_sum` and `_count` series belong to its family).
pub fn unresolved(exported: &BTreeSet<String>) -> Vec<String> {
    let mut missing = BTreeSet::new();
    for expr in queries() {
        for name in names_in(&expr) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| exported.contains(*f)))
                .unwrap_or(&name);
            if !exported.contains(family) {
                missing.insert(name);
            }
        }
    }
    missing.into_iter().collect()
}

#[test]
fn the_dashboard_has_the_panels_of_the_issue() {
    let all = queries().join("\n");
    for family in [
        "notify_records_consumed_total",
        "notify_consumer_lag_records",
        "notify_end_to_end_latency_seconds_bucket",
        "notify_delivery_outcomes_total",
        "notify_provider_latency_seconds_bucket",
        "notify_provider_errors_total",
        "notify_retry_scheduled_total",
        "notify_dead_letters_total",
        "notify_stage_decisions_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(all.contains(family), "no panel queries {family}");
    }
    assert_eq!(
        names_in("sum by (le) (rate(notify_x_bucket{a=\"notify_no\"}[5m])) / process_y"),
        ["notify_x_bucket", "process_y"]
    );
}
