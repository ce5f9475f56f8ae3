//! "The pipeline" for the ops tests that need it whole. The one place that starts it: today
//! the split processors as tests/it/pipeline.rs runs them (preferences, dedup, templates,
//! ratelimit, fanout), the four delivery processors and the retry ladder (one 1 s step, then
//! dead letters). When the `chain` processor lands, only `Pipeline::start` changes.

use std::collections::BTreeMap;

use notify_runtime::CancellationToken;
use notify_runtime::records::{
    Channel, Device, NotificationRequest, Platform, Priority, UserProfile,
};

use crate::delivery::{Mail, Stack, Started, device_token};

pub struct Pipeline {
    pub stack: Stack,
    /// Topics of the stages, by name (`requests`, `users`, `deferred`, ...).
    pub topics: BTreeMap<&'static str, String>,
    shutdown: CancellationToken,
    stages: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    deliveries: Vec<Started>,
}

/// At most 3 pushes per user an hour, as dev/notify.toml has it.
fn push_rule() -> toml::Value {
    toml::Value::Table(toml::toml! { channel = "PUSH"
    max = 3
    window_secs = 3600 })
}

impl Pipeline {
    pub async fn start(name: &str) -> Pipeline {
        let stack = Stack::new(name, Mail::Smtp).await;
        let names = [
            "requests",
            "users",
            "preferences",
            "deduped",
            "rendered",
            "limited",
            "deferred",
        ];
        let mut spec: Vec<(&str, i32)> = names.iter().map(|n| (*n, 2)).collect();
        spec.push(("templates", 1));
        let created = stack.env.create_topics(&spec).await;
        let topics: BTreeMap<&'static str, String> = names
            .iter()
            .copied()
            .chain(["templates"])
            .zip(created)
            .collect();
        let mut config = crate::pipeline::stage_config(&stack, &topics);
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
        let shutdown = CancellationToken::new();
        let mut stages = Vec::new();
        for stage in [
            "preferences",
            "dedup",
            "templates",
            "ratelimit",
            "fanout",
            notify_retry::NAME,
        ] {
            let (config, token) = (config.clone(), shutdown.clone());
            stages.push(tokio::spawn(async move {
                let result = notify_cli::run::run(stage, config, token).await;
                result.map_err(|e| format!("{stage}: {e:#}"))
            }));
        }
        let mut deliveries = Vec::new();
        for channel in notify_runtime::records::DeliveryChannel::ALL {
            deliveries.push(stack.start(channel, config.clone()).await);
        }
        Pipeline {
            stack,
            topics,
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
            user_id: user.into(),
            email: None,
            phone: None,
            devices: vec![Device {
                token: token.clone(),
                platform: Platform::Ios,
                enabled: true,
            }],
            locale: "en".into(),
            timezone: "UTC".into(),
            opt_out_channels: vec![],
            opt_out_categories: opt_out_category.into_iter().map(String::from).collect(),
            quiet_hours: None,
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
