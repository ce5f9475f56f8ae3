//! The chain (the default deployment) against the split stages and against producers of
//! every language: the same outcomes for a mixed workload, requests from a CRC32 producer
//! reaching profiles a Java producer wrote, and dedup on (user id, event id).

use std::collections::BTreeMap;
use std::time::Duration;

use notify_runtime::records::{
    Channel, DeliveryStatus, NotificationRequest, Outcome, Platform, Priority, QuietHours,
    UserProfile,
};
use notify_sandbox::Provider;
use notify_tests::records::{self, device};
use notify_tests::{decode_all, eventually};

use crate::delivery::device_token;
use crate::pipeline::{Mode, Pipeline};

fn profile(user: &str) -> UserProfile {
    UserProfile {
        email: Some(format!("{}@example.com", user.to_ascii_lowercase())),
        ..records::profile(user, vec![device(device_token(user), Platform::Ios)])
    }
}

fn request(event_id: &str, user: &str) -> NotificationRequest {
    let mut r = Pipeline::request(event_id, user);
    r.channels = vec![];
    r
}

/// The status events of `p` once `n` of them arrived and nothing more came for a while.
async fn settled_statuses(p: &Pipeline, n: usize) -> Vec<DeliveryStatus> {
    let reader = p.stack.env.reader(&p.stack.status);
    let mut all = Vec::new();
    let got = eventually(Duration::from_secs(120), async || {
        let raw = reader.raw(usize::MAX, Duration::from_millis(500));
        all.extend(
            decode_all::<DeliveryStatus>(&p.stack.env.codec, raw)
                .await
                .into_iter()
                .map(|r| r.value),
        );
        (all.len() >= n).then_some(())
    })
    .await;
    assert!(got.is_some(), "{} of {n} statuses: {all:#?}", all.len());
    let late = reader.raw_until_quiet(Duration::from_secs(3), Duration::from_secs(20));
    all.extend(
        decode_all::<DeliveryStatus>(&p.stack.env.codec, late)
            .await
            .into_iter()
            .map(|r| r.value),
    );
    all
}

/// What an outcome says, without when or who said it.
type Said = (String, String, String, Option<String>, Option<String>);

fn said(statuses: &[DeliveryStatus]) -> BTreeMap<Said, usize> {
    let mut out = BTreeMap::new();
    for s in statuses {
        // Render failures name the template key, which is the same in both runs.
        let key = (
            s.event_id.clone(),
            s.user_id.clone(),
            format!("{:?}", s.outcome),
            s.channel.clone(),
            s.reason.clone(),
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// A user in quiet hours right now (22:00-07:00 in a zone where it is 23:xx).
fn in_quiet_hours(user: &str) -> UserProfile {
    let (zone, _) = crate::stages_filter::zone_at_late_evening();
    let mut p = profile(user);
    p.timezone = zone;
    p.quiet_hours = Some(QuietHours {
        start: "22:00".into(),
        end: "07:00".into(),
    });
    p
}

/// Runs the mixed workload; returns the statuses (and how many) and deliveries per contact.
async fn mixed(p: &Pipeline) -> (Vec<DeliveryStatus>, BTreeMap<String, usize>) {
    let users = &p.topics["users"];
    let env = &p.stack.env;
    let mut all = profile("u-all");
    all.phone = Some("+4915100000001".into());
    all.devices.push(device("fcm-u-all", Platform::Android));
    let mut optcat = profile("u-optcat");
    optcat.opt_out_categories = vec!["billing".into()];
    let mut optch = profile("u-optch");
    optch.phone = Some("+4915100000002".into());
    optch.opt_out_channels = vec![Channel::Sms];
    for profile in [
        all,
        optcat,
        optch,
        in_quiet_hours("u-quiet"),
        profile("u-flood"),
        profile("u-render"),
    ] {
        env.produce(users, &profile.user_id, &profile).await;
    }
    let mut requests = vec![request("r-all", "u-all")];
    requests.push(request("r-optcat", "u-optcat"));
    let mut only = request("r-optch", "u-optch");
    only.channels = vec![Channel::Sms, Channel::Email];
    requests.push(only);
    requests.push(request("r-quiet", "u-quiet"));
    let mut critical = request("r-quiet-critical", "u-quiet");
    critical.priority = Priority::Critical;
    requests.push(critical);
    for _ in 0..3 {
        requests.push(request("r-dup", "u-all"));
    }
    for i in 0..5 {
        let mut flood = request(&format!("r-flood-{i}"), "u-flood");
        flood.channels = vec![Channel::Push];
        requests.push(flood);
    }
    let mut missing = request("r-render", "u-render");
    missing.template_id = "no_such_template".into();
    requests.push(missing);
    requests.push(request("r-unknown", "u-nobody"));
    // One at a time, in order: the rate limit and the duplicates depend on it.
    for r in &requests {
        p.send(r).await;
    }
    // FILTERED 2 + DEFERRED 1 + ACCEPTED 10 + DUPLICATE 2 + RATE_LIMITED 2 + RENDER_FAILED 2
    // + SENT 14 (r-all 4: APNs, FCM, SMS, e-mail; r-optch 1; r-quiet-critical 2; r-dup 4;
    // r-flood 3).
    let statuses = settled_statuses(p, 33).await;
    let mut delivered = BTreeMap::new();
    for provider in [Provider::Apns, Provider::Fcm, Provider::Twilio] {
        for m in p.stack.sandbox.messages(Some(provider)) {
            *delivered
                .entry(format!("{provider:?}/{}", m.recipient))
                .or_insert(0) += 1;
        }
    }
    for user in ["u-all", "u-optch", "u-quiet", "u-flood"] {
        let address = format!("{user}@example.com");
        let mails = crate::delivery::mails_to(&address).len();
        if mails > 0 {
            delivered.insert(format!("mail/{address}"), mails);
        }
    }
    (statuses, delivered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chain_and_the_split_stages_decide_a_mixed_workload_alike() {
    let chain = Pipeline::start_with("chain_same", Mode::Chain, 2).await;
    let (chain_statuses, chain_delivered) = mixed(&chain).await;
    chain.stop().await;
    // The split run writes to the same Maildir: its mails are counted as the difference.
    let split = Pipeline::start_with("split_same", Mode::Split, 2).await;
    let (split_statuses, split_delivered) = mixed(&split).await;
    split.stop().await;
    let (a, b) = (said(&chain_statuses), said(&split_statuses));
    let only_chain: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).collect();
    let only_split: Vec<_> = b.iter().filter(|(k, v)| a.get(*k) != Some(v)).collect();
    assert!(
        only_chain.is_empty() && only_split.is_empty(),
        "outcomes differ:\nchain only {only_chain:#?}\nsplit only {only_split:#?}"
    );
    let count = |o: Outcome| chain_statuses.iter().filter(|s| s.outcome == o).count();
    assert_eq!(count(Outcome::Duplicate), 2);
    assert_eq!(count(Outcome::RateLimited), 2);
    assert_eq!(count(Outcome::Deferred), 1);
    assert_eq!(
        count(Outcome::RenderFailed),
        2,
        "push and e-mail of r-render"
    );
    assert_eq!(
        count(Outcome::Accepted),
        10,
        "one per request dedup accepted"
    );
    assert_eq!(count(Outcome::Sent), 14, "{chain_statuses:#?}");
    let providers = |d: &BTreeMap<String, usize>| -> BTreeMap<String, usize> {
        d.iter()
            .filter(|(k, _)| !k.starts_with("mail/"))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    assert_eq!(providers(&chain_delivered), providers(&split_delivered));
    assert!(
        chain_delivered.values().all(|n| *n >= 1),
        "{chain_delivered:?}"
    );
}

/// 24 users on 8 partitions: profiles written by the project's (Java's) partitioner, requests
/// by librdkafka's default (CRC32, as stock Python and Go producers do). Requests that land
/// off their user's partition are forwarded there once; every request is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_from_a_crc32_producer_find_profiles_a_murmur2_producer_wrote() {
    let p = Pipeline::start_with("chain_partitioners", Mode::Chain, 8).await;
    let env = &p.stack.env;
    let users: Vec<String> = (0..24).map(|i| format!("u-part-{i}")).collect();
    for u in &users {
        let mut profile = profile(u);
        profile.email = None;
        env.produce_partitioned("murmur2_random", &p.topics["users"], u, &profile)
            .await;
    }
    let mut off_partition = 0;
    for u in &users {
        let mut r = request(&format!("e-{u}"), u);
        r.channels = vec![Channel::Push];
        let at = env
            .produce_partitioned("consistent_random", &p.topics["requests"], u, &r)
            .await;
        if at != notify_runtime::partitioner::partition_for(u, 8) {
            off_partition += 1;
        }
    }
    assert!(
        off_partition > 0,
        "no request landed off its user's partition"
    );
    let statuses = settled_statuses(&p, 48).await;
    let sent: Vec<_> = statuses
        .iter()
        .filter(|s| s.outcome == Outcome::Sent)
        .collect();
    assert_eq!(sent.len(), 24, "every request delivered: {statuses:#?}");
    assert!(
        !statuses.iter().any(|s| s.outcome == Outcome::Filtered),
        "a user was not found: {statuses:#?}"
    );
    for u in &users {
        assert_eq!(
            p.stack.delivered(Provider::Apns, &device_token(u)),
            1,
            "{u}"
        );
    }
    eprintln!("chain_partitioners: {off_partition} of 24 requests forwarded");
    p.stop().await;
}

/// One event id for two users is two notifications; one user's event id sent ten times, five
/// of them by a producer with another partitioner, is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dedup_is_per_user_and_event_whatever_the_producer() {
    let p = Pipeline::start_with("chain_dedup_scope", Mode::Chain, 4).await;
    let env = &p.stack.env;
    for u in ["u-a", "u-b", "u-c"] {
        let mut profile = profile(u);
        profile.email = None;
        env.produce(&p.topics["users"], u, &profile).await;
    }
    p.send(&request("e-shared", "u-a")).await;
    p.send(&request("e-shared", "u-b")).await;
    let ten = request("e-ten", "u-c");
    let sends = (0..10).map(|i| {
        let (env, topic, ten) = (env, &p.topics["requests"], &ten);
        async move {
            if i % 2 == 0 {
                env.produce(topic, "u-c", ten).await;
            } else {
                env.produce_partitioned("consistent_random", topic, "u-c", ten)
                    .await;
            }
        }
    });
    futures::future::join_all(sends).await;
    // ACCEPTED 3, DUPLICATE 9, SENT 3.
    let statuses = settled_statuses(&p, 15).await;
    let of = |e: &str, u: &str, o: Outcome| {
        statuses
            .iter()
            .filter(|s| s.event_id == e && s.user_id == u && s.outcome == o)
            .count()
    };
    assert_eq!(of("e-shared", "u-a", Outcome::Sent), 1);
    assert_eq!(of("e-shared", "u-b", Outcome::Sent), 1);
    assert_eq!(of("e-ten", "u-c", Outcome::Accepted), 1);
    assert_eq!(of("e-ten", "u-c", Outcome::Duplicate), 9);
    assert_eq!(of("e-ten", "u-c", Outcome::Sent), 1);
    for u in ["u-a", "u-b", "u-c"] {
        assert_eq!(
            p.stack.delivered(Provider::Apns, &device_token(u)),
            1,
            "{u}"
        );
    }
    p.stop().await;
}
