//! The fault suite's harness: the pipeline as the chart deploys it by default (`notify run
//! chain`, the four delivery processors and retry, each its own process on one config file),
//! users with an iPhone, an Android phone, a phone number and an e-mail address, requests at a
//! steady rate while a scenario does its damage, then the oracle's report.
//!
//! `NOTIFY_CHAOS_SCALE` (default 1, `make chaos` sets more) multiplies the load and the length
//! of every scenario; `NOTIFY_CHAOS_REPORT` names a file each scenario appends its row to.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use notify_runtime::records::{Channel, NotificationRequest, Platform, UserProfile};
use notify_sandbox::Provider;
use notify_tests::fleet::Fleet;
use notify_tests::oracle::{self, Delivered, Facts, Message, Produced, Report};
use notify_tests::records::{self, device};
use notify_tests::{TopicReader, decode_all, headers_of, patient};

use crate::delivery::{Mail, Stack, device_token};
use crate::pipeline::{Prepared, prepare_in};

/// The processors of the default deployment.
pub const DELIVERY: [&str; 4] = [
    "deliver-apns",
    "deliver-fcm",
    "deliver-sms",
    "deliver-email",
];
/// Pushes per user the push rule allows (tests/it/pipeline.rs, as dev/notify.toml).
pub const PUSH_LIMIT: usize = 3;

/// The length factor of every scenario.
pub fn scale() -> f64 {
    std::env::var("NOTIFY_CHAOS_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0)
}

/// `base` stretched by [`scale`].
pub fn scaled(base: usize) -> usize {
    (base as f64 * scale()).round() as usize
}

pub struct User {
    pub id: String,
    pub ios: String,
    pub android: String,
    pub phone: String,
    pub email: String,
}

impl User {
    fn messages(&self) -> Vec<Message> {
        [
            ("APNS", &self.ios),
            ("FCM", &self.android),
            ("SMS", &self.phone),
            ("EMAIL", &self.email),
        ]
        .map(|(channel, recipient)| Message {
            channel: channel.into(),
            recipient: recipient.clone(),
        })
        .to_vec()
    }
}

/// One scenario's pipeline, processes and load.
pub struct Run {
    pub name: String,
    pub p: Prepared,
    pub fleet: Mutex<Fleet>,
    pub users: Vec<User>,
    pub prefix: String,
    status: TopicReader,
    started: Instant,
}

impl Run {
    /// Topics of `partitions` each, `users` users, and the default deployment running.
    pub async fn start(name: &str, partitions: i32, users: usize) -> Run {
        Self::start_with(name, partitions, users, |_| {}).await
    }

    /// As [`Run::start`], with the configuration changed first.
    pub async fn start_with(
        name: &str,
        partitions: i32,
        users: usize,
        tweak: impl FnOnce(&mut notify_runtime::Config),
    ) -> Run {
        let stack = Stack::new(name, Mail::SendGrid).await;
        Self::start_on(stack, partitions, users, tweak).await
    }

    /// As [`Run::start_with`], on `stack` (a private broker's, say).
    pub async fn start_on(
        stack: Stack,
        partitions: i32,
        users: usize,
        tweak: impl FnOnce(&mut notify_runtime::Config),
    ) -> Run {
        let name = stack.env.id.clone();
        let mut p = prepare_in(stack, partitions).await;
        tweak(&mut p.config);
        let id = p.stack.env.id.clone();
        let dir = std::env::temp_dir().join(format!("notify-chaos-{id}"));
        std::fs::create_dir_all(&dir).expect("run dir");
        let config_file = dir.join("notify.toml");
        let text = toml::to_string(&p.config).expect("config serialises");
        std::fs::write(&config_file, text).expect("config written");
        let digits: u32 = rand::random::<u32>() % 1000;
        let users: Vec<User> = (0..users)
            .map(|n| {
                let uid = format!("u{n}-{id}");
                User {
                    ios: device_token(&format!("ios-{uid}")),
                    android: format!("fcm-{uid}"),
                    phone: format!("+4915{digits:03}{n:06}"),
                    email: format!("u{n}-{}@example.com", id.to_ascii_lowercase()),
                    id: uid,
                }
            })
            .collect();
        for u in &users {
            p.stack
                .env
                .produce(&p.topics["users"], &u.id, &profile(u))
                .await;
        }
        let mut fleet = Fleet::new(&config_file, &dir.join("logs"));
        fleet.spawn(notify_chain::NAME, &[]);
        for d in DELIVERY {
            fleet.spawn(d, &[]);
        }
        fleet.spawn(notify_retry::NAME, &[]);
        let status = p.stack.env.reader(&p.stack.status);
        let run = Run {
            name: name
                .rsplit_once('_')
                .map_or(name.clone(), |(n, _)| n.to_string()),
            prefix: format!("ev-{id}-"),
            p,
            fleet: Mutex::new(fleet),
            users,
            status,
            started: Instant::now(),
        };
        run.ready().await;
        run
    }

    /// Samples memory and restarts what exited, as Kubernetes would.
    pub fn supervise(&self) {
        let mut fleet = self.fleet();
        fleet.sample();
        for p in fleet.supervise() {
            eprintln!("{}: {p} exited; restarted", self.name);
        }
    }

    pub fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every live instance answers `/readyz` with 200.
    pub async fn ready(&self) {
        let ports: Vec<(String, u16)> = {
            let mut f = self.fleet();
            let live: Vec<usize> = (0..f.instances.len())
                .filter(|i| f.instances[*i].alive())
                .collect();
            live.iter()
                .map(|i| (f.instances[*i].id.clone(), f.instances[*i].port))
                .collect()
        };
        for (id, port) in ports {
            let ok = notify_tests::eventually(Duration::from_secs(90), async || {
                let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            })
            .await;
            assert!(ok.is_some(), "{id} never became ready");
        }
    }

    /// Request `n` of the run: every channel, its event id rendered into every message.
    pub fn request(&self, n: usize) -> NotificationRequest {
        let user = &self.users[n % self.users.len()];
        let event_id = format!("{}{n}", self.prefix);
        let mut r = crate::pipeline::Pipeline::request(&event_id, &user.id);
        r.channels = vec![Channel::Push, Channel::Sms, Channel::Email];
        r.data.insert("amount".into(), event_id);
        r
    }

    /// What request `n` should cause.
    pub fn produced(&self, n: usize, copies: usize) -> Produced {
        let r = self.request(n);
        Produced {
            event_id: r.event_id,
            user_id: r.user_id,
            copies,
            expected: self.users[n % self.users.len()].messages(),
        }
    }

    /// Requests `from..to` at `per_sec`, each once.
    pub async fn load(&self, from: usize, to: usize, per_sec: f64) -> Vec<Produced> {
        let gap = Duration::from_secs_f64(1.0 / per_sec);
        let begin = Instant::now();
        let mut out = Vec::new();
        for n in from..to {
            let r = self.request(n);
            self.p
                .stack
                .env
                .produce(&self.p.topics["requests"], &r.user_id, &r)
                .await;
            out.push(self.produced(n, 1));
            if let Some(wait) = (gap * (n - from + 1) as u32).checked_sub(begin.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            if n % 10 == 0 {
                self.supervise();
            }
        }
        out
    }

    /// Every message the providers accepted that belongs to this run.
    fn delivered(&self) -> Vec<Delivered> {
        self.p
            .stack
            .sandbox
            .messages(None)
            .into_iter()
            .filter_map(|m| {
                let event_id = oracle::event_in(&m.body.to_string(), &self.prefix)?;
                let channel = match m.provider {
                    Provider::Apns => "APNS",
                    Provider::Fcm => "FCM",
                    Provider::Twilio => "SMS",
                    Provider::Sendgrid => "EMAIL",
                };
                Some(Delivered {
                    event_id,
                    message: Message {
                        channel: channel.into(),
                        recipient: m.recipient,
                    },
                    at_ms: m.received_at,
                })
            })
            .collect()
    }

    /// Waits until every expected message has a terminal outcome (at most
    /// `timeout`), then a few quiet seconds more for late copies; the oracle's report.
    pub async fn settle(
        &self,
        produced: Vec<Produced>,
        fault_window: Option<(i64, i64)>,
        timeout: Duration,
    ) -> Report {
        let mut statuses = Vec::new();
        let deadline = Instant::now() + patient(timeout);
        let mut facts = Facts {
            produced,
            push_limit: Some(PUSH_LIMIT),
            fault_window,
            ..Facts::default()
        };
        let mut quiet_until = None;
        loop {
            let raw = self.status.raw(usize::MAX, Duration::from_millis(500));
            statuses.extend(
                decode_all::<notify_runtime::records::DeliveryStatus>(&self.p.stack.env.codec, raw)
                    .await
                    .into_iter()
                    .map(|r| r.value),
            );
            facts.statuses = statuses.clone();
            facts.delivered = self.delivered();
            let unsettled = oracle::check(&facts).unsettled;
            self.supervise();
            match quiet_until {
                None if unsettled == 0 => {
                    quiet_until = Some(Instant::now() + Duration::from_secs(5))
                }
                Some(t) if Instant::now() >= t => break,
                _ if Instant::now() >= deadline => break,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let dlq = self.p.stack.env.reader(&self.p.stack.dlq);
        facts.dead_letters = dlq
            .raw_until_quiet(Duration::from_secs(2), Duration::from_secs(30))
            .iter()
            .map(|m| {
                headers_of(m)
                    .get("notify.error.class")
                    .cloned()
                    .unwrap_or_else(|| "unknown".into())
            })
            .collect();
        facts.peak_rss_kib = self.fleet().peaks();
        facts.exits = self.fleet().exits.clone();
        let report = oracle::check(&facts);
        self.record(&report);
        report
    }

    /// Appends the scenario's row to `NOTIFY_CHAOS_REPORT` (one JSON object a line).
    fn record(&self, report: &Report) {
        eprintln!("{}: {report:?}", self.name);
        let Ok(path) = std::env::var("NOTIFY_CHAOS_REPORT") else {
            return;
        };
        let row = serde_json::json!({
            "scenario": self.name,
            "secs": self.started.elapsed().as_secs(),
            "scale": scale(),
            "report": report,
        });
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{row}");
        }
    }
}

/// Asserts the report is clean, with the report in the message.
pub fn assert_clean(name: &str, report: &Report) {
    assert!(report.clean(), "{name}: {report:#?}");
    assert!(
        report.delivered > 0,
        "{name}: nothing delivered: {report:#?}"
    );
}

fn profile(u: &User) -> UserProfile {
    let devices = vec![
        device(u.ios.clone(), Platform::Ios),
        device(u.android.clone(), Platform::Android),
    ];
    UserProfile {
        email: Some(u.email.clone()),
        phone: Some(u.phone.clone()),
        ..records::profile(&u.id, devices)
    }
}
