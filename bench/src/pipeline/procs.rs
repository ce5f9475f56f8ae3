//! The processes of the whole pipeline: the provider sandbox (`notify sandbox`) and every
//! processor (`notify run <name>`), wired to this run's private topics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Ctx;
use crate::stage::{self, Running};
use crate::stages::{self, Chain};

/// The pipeline in `dev/processors.sh` order.
pub const PROCESSORS: [&str; 10] = [
    "preferences",
    "dedup",
    "templates",
    "ratelimit",
    "fanout",
    "deliver-apns",
    "deliver-fcm",
    "deliver-sms",
    "deliver-email",
    "retry",
];

/// Topics of the pipeline: the chain of the stage runs under other names, plus the retry
/// ladder (two steps are enough: nothing is expected to fail against the sandbox).
pub struct Topics {
    pub chain: Chain,
    pub retry: [String; 2],
}

impl Topics {
    pub fn new(ctx: &Ctx) -> Topics {
        let t = |base: &str| ctx.topic(&format!("pipe-{base}"));
        let chain = Chain {
            requests: t("requests"),
            users: t("users"),
            templates: t("templates"),
            feedback: t("token-feedback"),
            routed: t("preferences"),
            deduped: t("deduped"),
            rendered: t("rendered"),
            limited: t("limited"),
            channels: ["apns", "fcm", "sms", "email"].map(|c| t(&format!("channel-{c}"))),
            status: t("status"),
            deferred: t("deferred"),
            dlq: t("dlq"),
        };
        Topics {
            chain,
            retry: [t("retry-10s"), t("retry-1m")],
        }
    }

    /// (written by the harness or as a ladder: plain timestamps, stamped at append).
    pub fn all(&self) -> (Vec<String>, Vec<String>) {
        let (mut plain, stamped) = self.chain.topics();
        plain.extend([self.chain.requests.clone(), self.chain.dlq.clone()]);
        plain.extend(self.retry.iter().cloned());
        (plain, stamped)
    }
}

/// `notify sandbox` on a free loopback port, with credentials generated into `dir`.
pub struct Sandbox {
    child: Child,
    pub base_url: String,
    /// The `[processors.deliver-*.provider]` tables it wrote for this address.
    pub delivery_config: PathBuf,
}

impl Sandbox {
    pub async fn start(notify_bin: &Path, dir: &Path, log: &Path) -> anyhow::Result<Sandbox> {
        let port = stage::free_port()?;
        let base_url = format!("http://127.0.0.1:{port}");
        let delivery_config = dir.join("delivery.toml");
        let child = Command::new(notify_bin)
            .arg("sandbox")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--creds-dir")
            .arg(dir)
            .env_remove("NOTIFY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).with_context(|| log.display().to_string())?)
            .spawn()
            .context("starting notify sandbox")?;
        let mut sandbox = Sandbox {
            child,
            base_url,
            delivery_config,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Ready when it answers and has written the delivery configuration (after binding).
        while !(sandbox.delivery_config.exists() && sandbox.answers().await) {
            if let Some(status) = sandbox.child.try_wait()? {
                bail!("notify sandbox exited: {status} (log {})", log.display());
            }
            if Instant::now() > deadline {
                bail!("notify sandbox not ready in 30 s (log {})", log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(sandbox)
    }

    async fn answers(&self) -> bool {
        let url = format!("{}/sandbox/stats", self.base_url);
        reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Forgets the recorded messages, so its memory reflects serving, not the archive.
    pub async fn clear(&self) {
        let url = format!("{}/sandbox/messages", self.base_url);
        let _ = reqwest::Client::new().delete(url).send().await;
    }

    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One process to start: name, settings, topics it reads (for the backlog) and writes.
pub struct Spec {
    pub name: &'static str,
    pub settings: Vec<(&'static str, String)>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// Every processor of the pipeline with its settings.
pub fn specs(topics: &Topics) -> Vec<Spec> {
    let c = &topics.chain;
    let mut specs: Vec<Spec> = stages::specs(c)
        .into_iter()
        .map(|s| {
            let mut settings = s.settings;
            if s.name == "ratelimit" {
                // Still a CQL round trip per record, but never the limit of this workload.
                settings.retain(|(k, _)| *k != "RULES");
                settings.push(("RULES", "[{ max = 1000000, window_secs = 3600 }]".into()));
            }
            Spec {
                name: s.name,
                settings,
                inputs: vec![s.input],
                outputs: s.outputs,
            }
        })
        .collect();
    for (name, input) in PROCESSORS[5..9].iter().zip(&c.channels) {
        specs.push(Spec {
            name,
            settings: vec![
                ("INPUT", input.clone()),
                ("RETRY_TOPIC", topics.retry[0].clone()),
                ("TOKEN_FEEDBACK_TOPIC", c.feedback.clone()),
                // No provider rate limit: the sandbox is the only receiver.
                ("RATE_PER_SEC", "0.0".into()),
            ],
            inputs: vec![input.clone()],
            outputs: vec![c.status.clone()],
        });
    }
    let step = |name: &str, ms: u64, topic: &str| {
        format!("{{ name = {name:?}, delay_ms = {ms}, topic = {topic:?} }}")
    };
    specs.push(Spec {
        name: "retry",
        settings: vec![
            (
                "STEPS",
                format!(
                    "[{}, {}]",
                    step("10s", 10_000, &topics.retry[0]),
                    step("1m", 60_000, &topics.retry[1])
                ),
            ),
            ("DEFERRED_TOPIC", c.deferred.clone()),
        ],
        inputs: topics.retry.to_vec(),
        outputs: c.channels.to_vec(),
    });
    specs
}

/// Starts every processor; the delivery processors read the sandbox's provider tables. When
/// one cannot be started, those already running are stopped.
pub async fn spawn_all(
    ctx: &Ctx,
    topics: &Topics,
    keyspace: &str,
    sandbox: &Sandbox,
) -> anyhow::Result<Vec<(Running, Vec<String>)>> {
    let prefix = format!("{}-pipe", ctx.run_id);
    let mut running = Vec::new();
    for spec in specs(topics) {
        let mut env = stages::process_env(ctx, &topics.chain, keyspace, spec.name, &spec.settings);
        if spec.name.starts_with("deliver-") {
            env.push((
                "NOTIFY_CONFIG".into(),
                sandbox.delivery_config.display().to_string(),
            ));
        }
        match stage::spawn(&ctx.notify_bin, spec.name, &prefix, &env, &spec.outputs) {
            Ok(r) => running.push((r, spec.inputs)),
            Err(e) => {
                for (r, _) in running {
                    let _ = r.stop().await;
                }
                return Err(e);
            }
        }
    }
    Ok(running)
}
