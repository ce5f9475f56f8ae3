//! Preference filter and dedup against the real stack: the table of filter cases with exact
//! status outcomes, concurrent copies of one id, and the CQL ledger's conformance.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{Timelike, Utc};
use notify_dedup::ledger::conformance;
use notify_runtime::Config;
use notify_runtime::Metrics;
use notify_runtime::dlq::retry;
use notify_runtime::records::{
    Channel, DeliveryChannel, DeliveryStatus, Device, NotificationRequest, Outcome, Platform,
    Priority, QuietHours, RoutedNotification, UserProfile,
};
use notify_tests::records::{self, device};
use notify_tests::{RunningProcessor, TestEnv};

pub struct Stages {
    pub requests: String,
    pub users: String,
    pub routed: String,
    pub deduped: String,
    pub deferred: String,
    pub status: String,
    pub config: Config,
}

/// Topics, keyspace and configuration of both stages for one test.
pub async fn stages(env: &TestEnv) -> Stages {
    let names = env
        .create_topics(&[
            ("requests", 4),
            ("users", 4),
            ("feedback", 1),
            ("routed", 4),
            ("deduped", 4),
            ("deferred", 1),
            ("status", 1),
            ("dlq", 1),
        ])
        .await;
    env.keyspace().await;
    let mut config = env.config.clone();
    config.runtime.status_topic = names[6].clone();
    config.runtime.dlq_topic = names[7].clone();
    let table = |pairs: &[(&str, &str)]| {
        toml::Value::Table(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), toml::Value::String(v.to_string())))
                .collect(),
        )
    };
    config.processors.insert(
        "preferences".into(),
        table(&[
            ("requests_topic", &names[0]),
            ("users_topic", &names[1]),
            ("token_feedback_topic", &names[2]),
            ("output", &names[3]),
            ("deferred_topic", &names[5]),
        ]),
    );
    config.processors.insert(
        "dedup".into(),
        table(&[("input", &names[3]), ("output", &names[4])]),
    );
    Stages {
        requests: names[0].clone(),
        users: names[1].clone(),
        routed: names[3].clone(),
        deduped: names[4].clone(),
        deferred: names[5].clone(),
        status: names[6].clone(),
        config,
    }
}

/// The preference filter as `notify run preferences` runs it: forwarding, then the filter.
pub async fn start_preferences(env: &TestEnv, s: &Stages) -> RunningProcessor {
    let metrics = Metrics::new("preferences");
    let forward = notify_preferences::forward(&s.config, &metrics).expect("forward builds");
    let stage = notify_preferences::build(&s.config, &metrics)
        .await
        .expect("preferences builds");
    env.start_stage(
        notify_runtime::chain!(forward, stage),
        "preferences",
        &[&s.requests],
        s.config.clone(),
        metrics,
    )
    .await
}

pub async fn start_dedup(env: &TestEnv, s: &Stages) -> RunningProcessor {
    let token = notify_runtime::CancellationToken::new();
    let metrics = Metrics::new("dedup");
    let stage = notify_dedup::build(&s.config, &metrics, &token)
        .await
        .expect("dedup builds");
    let config = notify_dedup::with_lanes(s.config.clone(), notify_dedup::LANES);
    env.start_stage(stage, "dedup", &[&s.routed], config, metrics)
        .await
}

pub use notify_tests::records::request;

pub fn profile(user_id: &str) -> UserProfile {
    UserProfile {
        email: Some(format!("{user_id}@example.com")),
        phone: Some("+4915100000000".into()),
        ..records::profile(
            user_id,
            vec![device(format!("tok-{user_id}"), Platform::Android)],
        )
    }
}

/// A fixed-offset IANA zone (not UTC) where it is now 23:xx, so 22:00–07:00 holds now and
/// crosses midnight; and the end of that window in epoch millis.
pub(crate) fn zone_at_late_evening() -> (String, i64) {
    let now = Utc::now();
    let mut offset = (23 - now.hour() as i32).rem_euclid(24);
    if offset > 14 {
        offset -= 24;
    }
    if offset == 0 {
        // Avoid UTC itself: 23:xx UTC is 22:xx at UTC-1, still inside the window.
        offset = -1;
    }
    // Etc/GMT-N is UTC+N (POSIX sign).
    let name = if offset >= 0 {
        format!("Etc/GMT-{offset}")
    } else {
        format!("Etc/GMT+{}", -offset)
    };
    let tz: chrono_tz::Tz = name.parse().expect("zone exists");
    let local = now.with_timezone(&tz).naive_local();
    let mut date = local.date();
    if local.time().hour() >= 7 {
        date = date.succ_opt().expect("date");
    }
    let end = date.and_hms_opt(7, 0, 0).expect("time");
    let end = chrono::TimeZone::from_local_datetime(&tz, &end)
        .single()
        .expect("fixed offset");
    (name, end.timestamp_millis())
}

type Seen = Vec<(Outcome, String, Option<String>)>;

async fn statuses(env: &TestEnv, topic: &str, n: usize) -> HashMap<String, Seen> {
    let got = env
        .reader(topic)
        .records::<DeliveryStatus>(&env.codec, n, Duration::from_secs(60))
        .await;
    let mut by_id: HashMap<String, Seen> = HashMap::new();
    for r in got {
        let s = r.value;
        by_id
            .entry(s.event_id)
            .or_default()
            .push((s.outcome, s.stage, s.reason));
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filter_cases_have_exactly_the_expected_statuses() {
    let env = TestEnv::new("stages_filter").await;
    let s = stages(&env).await;
    let (zone, window_end) = zone_at_late_evening();
    let mut profiles = Vec::new();
    let mut p = profile("u-optch");
    p.opt_out_channels = vec![Channel::Sms];
    profiles.push(p);
    let mut p = profile("u-optcat");
    p.opt_out_categories = vec!["marketing".into()];
    profiles.push(p);
    let mut p = profile("u-quiet");
    p.timezone = zone.clone();
    p.quiet_hours = Some(QuietHours {
        start: "22:00".into(),
        end: "07:00".into(),
    });
    profiles.push(p);
    let mut p = profile("u-dev");
    p.devices = vec![Device {
        token: "ios-off".into(),
        platform: Platform::Ios,
        enabled: false,
    }];
    profiles.push(p);
    let mut p = profile("u-upd");
    p.opt_out_channels = vec![Channel::Email];
    profiles.push(p);
    for p in &profiles {
        env.produce(&s.users, &p.user_id, p).await;
    }
    let prefs = start_preferences(&env, &s).await;
    let dedup = start_dedup(&env, &s).await;

    // The update right before the request must be what the request sees.
    env.produce(&s.users, "u-upd", &profile("u-upd")).await;
    let mut cases: Vec<(NotificationRequest, Seen)> = Vec::new();
    let filtered = |reason: &str| {
        vec![(
            Outcome::Filtered,
            "preferences".to_string(),
            Some(reason.to_string()),
        )]
    };
    let accepted = vec![(Outcome::Accepted, "dedup".to_string(), None)];
    let mut r = request("c-optch", "u-optch");
    r.channels = vec![Channel::Sms];
    cases.push((r, filtered("opt_out_channel")));
    let mut r = request("c-optcat", "u-optcat");
    r.category = "marketing".into();
    cases.push((r, filtered("opt_out_category")));
    cases.push((
        request("c-quiet", "u-quiet"),
        vec![(
            Outcome::Deferred,
            "preferences".into(),
            Some("quiet_hours".into()),
        )],
    ));
    let mut r = request("c-critical", "u-quiet");
    r.priority = Priority::Critical;
    cases.push((r, accepted.clone()));
    cases.push((request("c-unknown", "u-nobody"), filtered("unknown_user")));
    let mut r = request("c-expired", "u-optch");
    r.expires_at = Some(notify_runtime::now_ms() - 1_000);
    cases.push((
        r,
        vec![(
            Outcome::Expired,
            "preferences".into(),
            Some("expired".into()),
        )],
    ));
    let mut r = request("c-device", "u-dev");
    r.channels = vec![Channel::Push];
    cases.push((r, filtered("no_enabled_device")));
    let mut r = request("c-updated", "u-upd");
    r.channels = vec![Channel::Email];
    cases.push((r, accepted.clone()));
    let mut r = request("c-direct", "u-nobody");
    r.email = Some("direct@example.com".into());
    cases.push((r, accepted.clone()));
    for (r, _) in &cases {
        env.produce(&s.requests, &r.user_id, r).await;
    }
    // A deferred request coming back after its window passes.
    let back = request("c-back", "u-quiet");
    let bytes = env.codec.encode(&s.requests, &back).await.expect("encode");
    let past = (notify_runtime::now_ms() - 1).to_string();
    env.produce_bytes(
        &s.requests,
        Some("u-quiet"),
        Some(&bytes),
        None,
        &[
            (retry::NOT_BEFORE, &past),
            (retry::ORIGIN_TOPIC, &s.requests),
        ],
    )
    .await;
    cases.push((back, accepted.clone()));

    let expected: HashMap<String, Seen> = cases
        .iter()
        .map(|(r, want)| (r.event_id.clone(), want.clone()))
        .collect();
    let got = statuses(&env, &s.status, expected.len()).await;
    // Anything late would show up within this quiet period.
    let extra = env
        .reader(&s.status)
        .raw_until_quiet(Duration::from_secs(3), Duration::from_secs(10));
    assert_eq!(extra.len(), expected.len(), "no status beyond one per case");
    for (id, want) in &expected {
        assert_eq!(got.get(id), Some(want), "statuses of {id}");
    }

    // The deferred copy: the original request with the end of the window.
    let held = env
        .reader(&s.deferred)
        .records::<NotificationRequest>(&env.codec, 1, Duration::from_secs(30))
        .await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].value.event_id, "c-quiet");
    assert_eq!(held[0].headers[retry::NOT_BEFORE], window_end.to_string());
    assert_eq!(held[0].headers[retry::ORIGIN_TOPIC], s.requests);

    // What went downstream, with the contact points chosen.
    let out = env
        .reader(&s.deduped)
        .records::<RoutedNotification>(&env.codec, 4, Duration::from_secs(30))
        .await;
    let by_id: HashMap<String, &RoutedNotification> = out
        .iter()
        .map(|r| (r.value.request.event_id.clone(), &r.value))
        .collect();
    assert_eq!(out.len(), 4, "{:?}", by_id.keys());
    let targets = |id: &str| -> Vec<(DeliveryChannel, String)> {
        by_id[id]
            .targets
            .iter()
            .map(|t| (t.channel, t.address.clone()))
            .collect()
    };
    assert_eq!(
        targets("c-updated"),
        vec![(DeliveryChannel::Email, "u-upd@example.com".into())]
    );
    assert_eq!(
        targets("c-direct"),
        vec![(DeliveryChannel::Email, "direct@example.com".into())]
    );
    assert_eq!(by_id["c-critical"].timezone, zone);
    dedup.stop().await.expect("dedup stops");
    prefs.stop().await.expect("preferences stops");
}

/// The same (user, event id) sent 10 times at once, half of them by a producer with
/// librdkafka's default partitioner (CRC32: another partition for this user than the Java
/// client's murmur2): forwarded to the user's partition, deduplicated there, one ACCEPTED and
/// one copy downstream. The same event id for another user is a notification of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_copies_from_two_partitioners_pass_once_per_user() {
    let env = TestEnv::new("stages_dedup10").await;
    let s = stages(&env).await;
    let prefs = start_preferences(&env, &s).await;
    let dedup = start_dedup(&env, &s).await;
    let owner = |u: &str| notify_runtime::partitioner::partition_for(u, 4);
    // A user whose CRC32 partition is not its murmur2 one (found by producing its profile).
    let mut user = String::new();
    for i in 0..50 {
        let candidate = format!("u-same-{i}");
        let p = env
            .produce_partitioned(
                "consistent_random",
                &s.users,
                &candidate,
                &profile(&candidate),
            )
            .await;
        if p != owner(&candidate) {
            user = candidate;
            break;
        }
    }
    assert!(
        !user.is_empty(),
        "no user with differing partitions in 50 tries"
    );
    env.produce(&s.users, "u-other", &profile("u-other")).await;
    let copy = request("same-id", &user);
    let sends = (0..10).map(|i| {
        let (env, s, copy, user) = (&env, &s, &copy, &user);
        async move {
            if i % 2 == 0 {
                env.produce(&s.requests, user, copy).await;
            } else {
                env.produce_partitioned("consistent_random", &s.requests, user, copy)
                    .await;
            }
        }
    });
    futures::future::join_all(sends).await;
    env.produce(&s.requests, "u-other", &request("same-id", "u-other"))
        .await;
    let got = statuses(&env, &s.status, 11).await;
    let outcomes: Vec<Outcome> = got["same-id"].iter().map(|(o, _, _)| *o).collect();
    let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
    assert_eq!(
        (count(Outcome::Accepted), count(Outcome::Duplicate)),
        (2, 9),
        "{outcomes:?}"
    );
    let out = env
        .reader(&s.deduped)
        .records::<RoutedNotification>(&env.codec, 2, Duration::from_secs(30))
        .await;
    let mut users: Vec<&str> = out
        .iter()
        .map(|r| r.value.request.user_id.as_str())
        .collect();
    users.sort_unstable();
    let mut expected = vec![user.as_str(), "u-other"];
    expected.sort_unstable();
    assert_eq!(users, expected, "one copy per user downstream");
    let extra = env
        .reader(&s.deduped)
        .raw_until_quiet(Duration::from_secs(3), Duration::from_secs(10));
    assert_eq!(extra.len(), 2, "nothing else downstream");
    dedup.stop().await.expect("dedup stops");
    prefs.stop().await.expect("preferences stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_ledger_conforms() {
    let env = TestEnv::new("stages_ledger").await;
    let session = std::sync::Arc::new(env.keyspace().await);
    let metrics = Metrics::new("dedup");
    let ledger = notify_dedup::CqlLedger::new(
        session,
        &env.config.cql.keyspace,
        Duration::from_secs(3600),
        4,
        notify_runtime::cql::BatchSettings::default(),
        &metrics,
        metrics.histogram_vec("t_dedup_ledger_seconds", "test", &["op"]),
    )
    .await
    .expect("ledger prepares");
    conformance(&ledger).await;
    let batches = metrics.render();
    assert!(
        batches.contains("notify_cql_statements_total{kind=\"batch\""),
        "records go in batches: {batches}"
    );
}
