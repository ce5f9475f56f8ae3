//! The whole pipeline: request → forwarding, preferences, dedup, templates, rate limits and
//! fan-out (the chain, or the same stages each in its own processor) → the four delivery
//! processors → the provider sandbox and the real SMTP server; then an invalid APNs token fed
//! back so the next request skips that device.

use std::collections::BTreeMap;

use notify_runtime::records::Channel;
use notify_runtime::records::{
    DeliveryStatus, NotificationRequest, Outcome, Platform, Priority, UserProfile, mask,
};
use notify_runtime::{CancellationToken, Config};
use notify_sandbox::{FaultSpec, Provider};
use notify_tests::records::{self, device};
use serde_json::json;

use crate::delivery::{Mail, Stack, Started, device_token, mails_to};

/// The stages before delivery, with their topics pointed at this test's.
pub(crate) fn stage_config(stack: &Stack, topics: &BTreeMap<&str, String>) -> Config {
    let mut config = stack.config.clone();
    let mut set = |name: &str, value: serde_json::Value| {
        let v: toml::Value = serde_json::from_value(value).expect("settings");
        config.processors.insert(name.into(), v);
    };
    set(
        "preferences",
        json!({
            "requests_topic": topics["requests"], "users_topic": topics["users"],
            "token_feedback_topic": stack.feedback, "output": topics["preferences"],
            "deferred_topic": topics["deferred"],
        }),
    );
    set(
        "dedup",
        json!({ "input": topics["preferences"], "output": topics["deduped"] }),
    );
    set(
        "templates",
        json!({
            "input": topics["deduped"], "output": topics["rendered"], "templates_topic": topics["templates"],
        }),
    );
    set(
        "ratelimit",
        json!({ "input": topics["rendered"], "output": topics["limited"] }),
    );
    set(
        "fanout",
        json!({
            "input": topics["limited"], "apns_topic": stack.apns, "fcm_topic": stack.fcm,
            "sms_topic": stack.sms, "email_topic": stack.email,
        }),
    );
    config
}

/// How the stages before delivery are deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `notify run chain`: the default deployment.
    Chain,
    /// `notify run preferences|dedup|templates|ratelimit|fanout`, a topic between each.
    Split,
}

/// The whole pipeline in this process, as the chart deploys it: the stages before delivery
/// (chain or split), the four delivery processors and the retry ladder (one 1 s step, then
/// dead letters), on this test's topics, keyspace and provider sandbox.
pub struct Pipeline {
    pub stack: Stack,
    /// Topics of the stages, by name (`requests`, `users`, `deferred`, ...).
    pub topics: BTreeMap<&'static str, String>,
    /// `/metrics` of each processor, by name (`chain`, `retry`, `deliver-apns`, ...).
    pub metrics: BTreeMap<String, String>,
    shutdown: CancellationToken,
    stages: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    deliveries: Vec<Started>,
}

/// The pipeline's topics, configuration and templates, nothing running yet.
pub struct Prepared {
    pub stack: Stack,
    pub config: Config,
    pub topics: BTreeMap<&'static str, String>,
}

/// Topics (`partitions` each), this test's configuration of every stage (the push rule of
/// dev/notify.toml, one 1 s retry step) and the demo templates pushed.
pub async fn prepare(name: &str, partitions: i32, mail: Mail) -> Prepared {
    prepare_in(Stack::new(name, mail).await, partitions).await
}

/// As [`prepare`], on `stack`.
pub async fn prepare_in(stack: Stack, partitions: i32) -> Prepared {
    let names = [
        "requests",
        "users",
        "preferences",
        "deduped",
        "rendered",
        "limited",
        "deferred",
    ];
    let mut spec: Vec<(&str, i32)> = names.iter().map(|n| (*n, partitions)).collect();
    spec.push(("templates", 1));
    let created = stack.env.create_topics(&spec).await;
    let topics: BTreeMap<&'static str, String> = names
        .iter()
        .copied()
        .chain(["templates"])
        .zip(created)
        .collect();
    let mut config = stage_config(&stack, &topics);
    if let Some(toml::Value::Table(t)) = config.processors.get_mut("ratelimit") {
        t.insert("rules".into(), toml::Value::Array(vec![push_rule()]));
    }
    config.processors.insert(
        notify_retry::NAME.into(),
        crate::retry::settings(
            std::slice::from_ref(&stack.retry),
            &[1_000],
            &topics["deferred"],
        ),
    );
    let templates =
        notify_cli::templates::load_dir(&notify_tests::repo_root().join("dev/templates"))
            .expect("demo templates");
    notify_cli::templates::push(&config, &topics["templates"], &templates)
        .await
        .expect("templates pushed");
    Prepared {
        stack,
        config,
        topics,
    }
}

/// At most 3 pushes per user an hour, as dev/notify.toml has it.
fn push_rule() -> toml::Value {
    toml::Value::Table(toml::toml! { channel = "PUSH"
    max = 3
    window_secs = 3600 })
}

impl Pipeline {
    /// The default deployment (the chain), 2 partitions per topic.
    pub async fn start(name: &str) -> Pipeline {
        Self::start_with(name, Mode::Chain, 2).await
    }

    pub async fn start_with(name: &str, mode: Mode, partitions: i32) -> Pipeline {
        Self::start_configured(name, mode, partitions, |_| {}).await
    }

    /// As [`Pipeline::start_with`], with `adjust` applied to every processor's configuration.
    pub async fn start_configured(
        name: &str,
        mode: Mode,
        partitions: i32,
        adjust: impl Fn(&mut Config),
    ) -> Pipeline {
        let Prepared {
            stack,
            mut config,
            topics,
        } = prepare(name, partitions, Mail::Smtp).await;
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let mut stages = Vec::new();
        let mut metrics = BTreeMap::new();
        // Each processor serves its own /metrics, as each would in its own pod.
        let mut own_port = |name: &str, config: &Config| {
            let port = notify_runtime::http::unused_loopback_port().expect("a free port");
            metrics.insert(name.to_string(), format!("http://127.0.0.1:{port}/metrics"));
            let mut config = config.clone();
            config.http.listen = format!("127.0.0.1:{port}");
            config
        };
        let before_delivery: &[&'static str] = match mode {
            Mode::Chain => &[notify_chain::NAME],
            Mode::Split => &["preferences", "dedup", "templates", "ratelimit", "fanout"],
        };
        for stage in before_delivery.iter().copied().chain([notify_retry::NAME]) {
            let (config, token) = (own_port(stage, &config), shutdown.clone());
            stages.push(tokio::spawn(async move {
                let result = notify_cli::run::run(stage, config, token).await;
                result.map_err(|e| format!("{stage}: {e:#}"))
            }));
        }
        let mut deliveries = Vec::new();
        for channel in notify_runtime::records::DeliveryChannel::ALL {
            let config = own_port(
                &format!("deliver-{}", channel.as_str().to_lowercase()),
                &config,
            );
            deliveries.push(stack.start(channel, config).await);
        }
        // The chain takes its partitions over (its tables load) before requests count.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        Pipeline {
            stack,
            topics,
            metrics,
            shutdown,
            stages,
            deliveries,
        }
    }

    /// A user with one iOS device (token from `device_token(user)`), optionally opted out of
    /// a category.
    pub async fn add_user(&self, user: &str, opt_out_category: Option<&str>) -> String {
        let token = device_token(user);
        let profile = UserProfile {
            opt_out_categories: opt_out_category.into_iter().map(String::from).collect(),
            ..records::profile(user, vec![device(token.clone(), Platform::Ios)])
        };
        self.stack
            .env
            .produce(&self.topics["users"], user, &profile)
            .await;
        token
    }

    /// A push request the demo templates render.
    pub fn request(event_id: &str, user: &str) -> NotificationRequest {
        let mut r = crate::foundation::request(event_id, user);
        r.channels = vec![Channel::Push];
        r.priority = Priority::High;
        r.created_at = notify_runtime::now_ms();
        r.data = [("amount", "9.99 EUR"), ("due_date", "1 Dec")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        r
    }

    pub async fn send(&self, r: &NotificationRequest) {
        self.stack
            .env
            .produce(&self.topics["requests"], &r.user_id, r)
            .await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for stage in self.stages {
            stage
                .await
                .expect("stage task")
                .expect("stage stops cleanly");
        }
        for d in self.deliveries {
            d.stop().await;
        }
    }
}

fn request(event_id: &str, user_id: &str) -> NotificationRequest {
    NotificationRequest {
        data: [("amount", "42.00 EUR"), ("due_date", "1 Dec")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        priority: Priority::High,
        source: "billing".into(),
        ..records::request(event_id, user_id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chain_delivers_every_channel_once_and_skips_a_dead_token_next_time() {
    every_channel_once_then_skip_a_dead_token("pipeline_chain", Mode::Chain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_stages_deliver_every_channel_once_and_skip_a_dead_token_next_time() {
    every_channel_once_then_skip_a_dead_token("pipeline_split", Mode::Split).await;
}

async fn every_channel_once_then_skip_a_dead_token(name: &str, mode: Mode) {
    let p = Pipeline::start_with(name, mode, 2).await;
    let (stack, topics) = (&p.stack, &p.topics);
    let env = &stack.env;
    let user = format!("{}-user", env.id);
    let (ios_a, ios_b) = (
        device_token(&format!("{user}-a")),
        device_token(&format!("{user}-b")),
    );
    let android = format!("fcm-{user}");
    let email = format!("{}@example.com", env.id.to_ascii_lowercase());
    let devices = vec![
        device(ios_a.clone(), Platform::Ios),
        device(ios_b.clone(), Platform::Ios),
        device(android.clone(), Platform::Android),
    ];
    let profile = UserProfile {
        email: Some(email.clone()),
        phone: Some("+4915112345678".into()),
        ..records::profile(&user, devices)
    };
    env.produce(&topics["users"], &user, &profile).await;

    // 1. One request, every channel: exactly one message per contact point, all SENT.
    env.produce(&topics["requests"], &user, &request("r1", &user))
        .await;
    let sent_r1 = |s: &DeliveryStatus| s.event_id == "r1" && s.outcome == Outcome::Sent;
    let statuses = stack.wait_statuses(5, sent_r1).await;
    let mut channels: Vec<String> = statuses
        .iter()
        .filter(|s| sent_r1(s))
        .filter_map(|s| s.channel.clone())
        .collect();
    channels.sort();
    assert_eq!(channels, ["APNS", "APNS", "EMAIL", "FCM", "SMS"]);
    assert_eq!(stack.delivered(Provider::Apns, &ios_a), 1);
    assert_eq!(stack.delivered(Provider::Apns, &ios_b), 1);
    assert_eq!(stack.delivered(Provider::Fcm, &android), 1);
    assert_eq!(stack.delivered(Provider::Twilio, "+4915112345678"), 1);
    let apns = stack.sandbox.messages(Some(Provider::Apns));
    let push = apns
        .iter()
        .find(|m| m.recipient == ios_a)
        .expect("push to device a");
    assert!(
        push.body.to_string().contains("42.00 EUR"),
        "rendered push: {}",
        push.body
    );
    let mails = mails_to(&email);
    assert_eq!(mails.len(), 1, "one e-mail");
    assert!(mails[0].contains("42.00 EUR"), "rendered e-mail");

    // 2. Device a is now unregistered at Apple: TOKEN_INVALID, fed back to the filter.
    stack.sandbox.add_fault(
        FaultSpec::new(Provider::Apns)
            .token(ios_a.clone())
            .status(410)
            .body(json!({"reason": "Unregistered"})),
    );
    env.produce(&topics["requests"], &user, &request("r2", &user))
        .await;
    let invalid = stack
        .wait_statuses(1, |s| {
            s.event_id == "r2" && s.outcome == Outcome::TokenInvalid
        })
        .await;
    let invalid: Vec<_> = invalid
        .iter()
        .filter(|s| s.event_id == "r2" && s.outcome == Outcome::TokenInvalid)
        .collect();
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].recipient.as_deref(), Some(mask(&ios_a).as_str()));

    // 3. The next request skips device a: the filter routes device b only.
    env.produce(&topics["requests"], &user, &request("r3", &user))
        .await;
    let r3 = stack
        .wait_statuses(4, |s| s.event_id == "r3" && s.outcome == Outcome::Sent)
        .await;
    let r3: Vec<_> = r3.iter().filter(|s| s.event_id == "r3").collect();
    let apns_r3: Vec<_> = r3
        .iter()
        .filter(|s| s.channel.as_deref() == Some("APNS"))
        .collect();
    assert!(
        apns_r3
            .iter()
            .all(|s| s.recipient.as_deref() == Some(mask(&ios_b).as_str())),
        "{apns_r3:#?}"
    );
    assert!(
        !r3.iter().any(|s| s.outcome == Outcome::TokenInvalid),
        "device a was tried again: {r3:#?}"
    );
    assert_eq!(stack.delivered(Provider::Apns, &ios_b), 3);
    assert_eq!(
        stack.delivered(Provider::Apns, &ios_a),
        1,
        "no new message to the dead token"
    );

    p.stop().await;
}
