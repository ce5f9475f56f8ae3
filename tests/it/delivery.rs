//! Delivery processors against the real stack: Kafka, Cassandra (ledger), the provider
//! sandbox in this process and the real SMTP server (aiosmtpd, Maildir under .run/smtp).

mod channels;
mod crash;
mod isolation;
mod outcomes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use notify_delivery::ledger::{MessageKey, Row};
use notify_delivery::settings::{DeliverySettings, EmailProvider, Security};
use notify_runtime::Config;
use notify_runtime::records::{ChannelMessage, DeliveryChannel, DeliveryStatus, Outcome, Priority};
use notify_runtime::runner::Running;
use notify_sandbox::{Provider, SandboxHandle, TestCredentials};
use notify_tests::{TestEnv, eventually, repo_root};
use scylla::client::session::Session;

/// A test's topics, sandbox, ledger keyspace and delivery configuration.
pub struct Stack {
    pub env: TestEnv,
    pub sandbox: SandboxHandle,
    pub session: Session,
    pub config: Config,
    pub apns: String,
    pub fcm: String,
    pub sms: String,
    pub email: String,
    pub retry: String,
    pub feedback: String,
    pub status: String,
    pub dlq: String,
}

pub enum Mail {
    Smtp,
    SendGrid,
}

impl Stack {
    pub async fn new(name: &str, mail: Mail) -> Stack {
        Self::in_env(TestEnv::new(name).await, mail).await
    }

    /// As [`Stack::new`], in `env` (on a test's private broker, say).
    pub async fn in_env(mut env: TestEnv, mail: Mail) -> Stack {
        let [apns, fcm, sms, email, retry, feedback, status, dlq] = env
            .create_topics(&[
                ("apns", 1),
                ("fcm", 2),
                ("sms", 2),
                ("email", 2),
                ("retry", 1),
                ("feedback", 1),
                ("status", 1),
                ("dlq", 1),
            ])
            .await
            .try_into()
            .unwrap();
        env.config.runtime.status_topic = status.clone();
        env.config.runtime.dlq_topic = dlq.clone();
        let session = env.keyspace().await;
        let creds = TestCredentials::generate().expect("credentials");
        let sandbox = notify_sandbox::serve(creds.sandbox_config("127.0.0.1:0".parse().unwrap()))
            .await
            .expect("sandbox");
        let dir = std::env::temp_dir().join(format!("notify-delivery-{}", env.id));
        let files = notify_cli::sandbox::write_files(&creds, &dir, &sandbox.base_url())
            .expect("credential files");
        let base = sandbox.base_url();
        let mut config = env.config.clone();
        let common = |input: &str| (input.to_string(), retry.clone(), feedback.clone());
        let mut set = |name: &str, value: toml::Value| {
            config.processors.insert(name.into(), value);
        };
        let mut a = notify_delivery::apns::Settings::default();
        (a.input, a.retry_topic, a.token_feedback_topic) = common(&apns);
        // Short enough for the crash test to wait out, longer than a call may take.
        a.lease_ms = 10_000;
        a.provider.timeout_ms = 8_000;
        a.provider.base_url = base.clone();
        a.provider.key_file = files.apns_key.display().to_string();
        a.provider.key_id = creds.apns.key_id.clone();
        a.provider.team_id = creds.apns.team_id.clone();
        a.provider.topic = "com.example.notify".into();
        set("deliver-apns", to_toml(&a));
        let mut f = notify_delivery::fcm::Settings::default();
        (f.input, f.retry_topic, f.token_feedback_topic) = common(&fcm);
        f.provider.base_url = base.clone();
        f.provider.service_account_file = files.fcm_service_account.display().to_string();
        set("deliver-fcm", to_toml(&f));
        let mut s = notify_delivery::sms::Settings::default();
        (s.input, s.retry_topic, s.token_feedback_topic) = common(&sms);
        s.provider.base_url = base.clone();
        s.provider.account_sid = creds.twilio.account_sid.clone();
        s.provider.auth_token_file = files.twilio_auth_token.display().to_string();
        s.provider.from = Some("+15005550006".into());
        set("deliver-sms", to_toml(&s));
        let mut e: DeliverySettings<_> = notify_delivery::email::Settings::default();
        (e.input, e.retry_topic, e.token_feedback_topic) = common(&email);
        e.provider.from = "Notify Test <notify@example.com>".into();
        match mail {
            Mail::Smtp => {
                e.provider.kind = EmailProvider::Smtp;
                e.provider.smtp_port = smtp_port();
                e.provider.smtp_security = Security::None;
            }
            Mail::SendGrid => {
                e.provider.kind = EmailProvider::Sendgrid;
                e.provider.sendgrid_base_url = base.clone();
                e.provider.sendgrid_api_key_file = files.sendgrid_api_key.display().to_string();
            }
        }
        set("deliver-email", to_toml(&e));
        Stack {
            env,
            sandbox,
            session,
            config,
            apns,
            fcm,
            sms,
            email,
            retry,
            feedback,
            status,
            dlq,
        }
    }

    /// Starts one delivery processor in this process.
    pub async fn start(&self, channel: DeliveryChannel, config: Config) -> Started {
        let token = notify_runtime::CancellationToken::new();
        let t = token.clone();
        let running = match channel {
            DeliveryChannel::Apns => notify_delivery::apns::start(config, t).await,
            DeliveryChannel::Fcm => notify_delivery::fcm::start(config, t).await,
            DeliveryChannel::Sms => notify_delivery::sms::start(config, t).await,
            DeliveryChannel::Email => notify_delivery::email::start(config, t).await,
        }
        .expect("delivery processor starts");
        Started { token, running }
    }

    pub fn topic_of(&self, channel: DeliveryChannel) -> &str {
        match channel {
            DeliveryChannel::Apns => &self.apns,
            DeliveryChannel::Fcm => &self.fcm,
            DeliveryChannel::Sms => &self.sms,
            DeliveryChannel::Email => &self.email,
        }
    }

    pub async fn send(&self, msg: &ChannelMessage) {
        self.env
            .produce(self.topic_of(msg.channel), &msg.recipient, msg)
            .await;
    }

    /// Messages the sandbox accepted for `recipient`.
    pub fn delivered(&self, provider: Provider, recipient: &str) -> usize {
        self.sandbox
            .messages(Some(provider))
            .iter()
            .filter(|m| m.recipient == recipient)
            .count()
    }

    /// Waits until `pred` holds for at least `n` status events; returns them all.
    pub async fn wait_statuses(
        &self,
        n: usize,
        pred: impl Fn(&DeliveryStatus) -> bool,
    ) -> Vec<DeliveryStatus> {
        let reader = self.env.reader(&self.status);
        let mut all = Vec::new();
        eventually(Duration::from_secs(90), async || {
            let raw = reader.raw(usize::MAX, Duration::from_millis(500));
            all.extend(
                notify_tests::decode_all::<DeliveryStatus>(&self.env.codec, raw)
                    .await
                    .into_iter()
                    .map(|r| r.value),
            );
            (all.iter().filter(|s| pred(s)).count() >= n).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("fewer than {n} matching statuses: {all:#?}"));
        all
    }

    pub async fn ledger_row(
        &self,
        event_id: &str,
        user_id: &str,
        channel: &str,
        recipient: &str,
    ) -> Option<Row> {
        let key = MessageKey {
            event_id: event_id.into(),
            user_id: user_id.into(),
            channel: channel.into(),
            recipient: recipient.into(),
        };
        notify_delivery::ledger_cql::read_row(&self.session, &self.config.cql.keyspace, &key)
            .await
            .expect("ledger readable")
    }
}

/// A processor started in this process.
pub struct Started {
    pub token: notify_runtime::CancellationToken,
    pub running: Running,
}

impl Started {
    pub async fn stop(self) {
        self.token.cancel();
        let done = tokio::time::timeout(Duration::from_secs(30), self.running.done).await;
        assert!(
            matches!(done, Ok(Ok(Ok(())))),
            "processor did not stop cleanly"
        );
    }
}

pub fn to_toml<T: serde::Serialize>(value: &T) -> toml::Value {
    toml::Value::try_from(value).expect("settings serialise")
}

fn smtp_port() -> u16 {
    std::env::var("NOTIFY_SMTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(12525)
}

/// The shared SMTP server's Maildir (`NOTIFY_SMTP_MAILDIR` when the stack runs elsewhere).
pub fn maildir() -> PathBuf {
    std::env::var("NOTIFY_SMTP_MAILDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".run/smtp/maildir/new"))
}

/// Mails in the SMTP server's Maildir addressed to `address`.
pub fn mails_to(address: &str) -> Vec<String> {
    let needle = format!("To: {address}");
    std::fs::read_dir(maildir())
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|text| text.lines().any(|l| l == needle))
                .collect()
        })
        .unwrap_or_default()
}

/// A 64-hex-digit APNs device token unique to this test.
pub fn device_token(seed: &str) -> String {
    let mut out = String::new();
    let mut x: u64 = seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    while out.len() < 64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(&format!("{:016x}", x));
    }
    out
}

pub fn message(
    event_id: &str,
    user_id: &str,
    channel: DeliveryChannel,
    recipient: &str,
) -> ChannelMessage {
    ChannelMessage {
        event_id: event_id.into(),
        user_id: user_id.into(),
        category: "shipping".into(),
        priority: Priority::High,
        channel,
        recipient: recipient.into(),
        title: Some(format!("Parcel {event_id}")),
        body: format!("Your parcel for {event_id} is on its way"),
        html_body: (channel == DeliveryChannel::Email)
            .then(|| format!("<p>Your parcel for <b>{event_id}</b> is on its way</p>")),
        data: BTreeMap::from([("collapse_id".to_string(), "parcel".to_string())]),
        created_at: notify_runtime::now_ms(),
        expires_at: None,
    }
}

pub fn is(
    event_id: &str,
    channel: &str,
    outcome: Outcome,
) -> impl Fn(&DeliveryStatus) -> bool + use<> {
    let (event_id, channel) = (event_id.to_string(), channel.to_string());
    move |s| {
        s.event_id == event_id && s.channel.as_deref() == Some(&*channel) && s.outcome == outcome
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_ledger_keeps_the_contract() {
    let env = TestEnv::new("ledger_contract").await;
    let session = std::sync::Arc::new(env.keyspace().await);
    let ledger = notify_delivery::ledger_cql::CqlLedger::new(
        session,
        &env.config.cql.keyspace,
        Duration::from_secs(5),
        &notify_runtime::Metrics::new("t"),
    )
    .await
    .expect("statements prepare");
    notify_delivery::ledger::check_ledger_contract(&ledger, &env.id).await;
}
