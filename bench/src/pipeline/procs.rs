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
    pub fn new(ctx: &Ctx, mode: Mode) -> Topics {
        let t = |base: &str| ctx.topic(&format!("{}-{base}", mode.label()));
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
            // Counts and fingerprints of every message, not an archive of a million.
            .arg("--keep-messages")
            .arg("1000")
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

    /// Messages accepted, and how many repeated an earlier one (a duplicate send).
    pub async fn stats(&self) -> anyhow::Result<notify_sandbox::SandboxStats> {
        let url = format!("{}/sandbox/stats", self.base_url);
        Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
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

/// How the stages from the intake to the channel topics run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `notify run chain`: one process, records passed between stages in memory (default).
    Chain,
    /// One process per stage (`notify run preferences`, ...), a topic between each two.
    Split,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Chain => "chain",
            Mode::Split => "split",
        }
    }
}

/// One process to start: name, settings (`NOTIFY_PROCESSORS__…` variables), topics it reads
/// (for the backlog) and writes.
pub struct Spec {
    pub name: &'static str,
    pub env: Vec<(String, String)>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// A started process with the topics it reads and writes.
pub struct Started {
    pub running: Running,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

fn settings_env(name: &str, settings: &[(&'static str, String)]) -> Vec<(String, String)> {
    let upper = name.to_ascii_uppercase();
    settings
        .iter()
        .map(|(k, v)| (format!("NOTIFY_PROCESSORS__{upper}__{k}"), v.clone()))
        .collect()
}

/// The stages from the intake to the channel topics, as `mode` runs them.
fn stage_specs(topics: &Topics, mode: Mode) -> Vec<Spec> {
    let c = &topics.chain;
    let stages: Vec<stages::StageSpec> = stages::specs(c)
        .into_iter()
        .map(|mut s| {
            if s.name == "ratelimit" {
                // Per-user limits off, as in the measurement: no rule, no CQL work.
                s.settings.retain(|(k, _)| *k != "RULES");
                s.settings.push(("RULES", "[]".into()));
            }
            s
        })
        .collect();
    match mode {
        Mode::Split => stages
            .into_iter()
            .map(|s| {
                let mut outputs = s.outputs;
                if s.name == "preferences" {
                    // Requests off their user's partition are forwarded back to the intake.
                    outputs.push(c.requests.clone());
                }
                Spec {
                    name: s.name,
                    env: settings_env(s.name, &s.settings),
                    inputs: vec![s.input],
                    outputs,
                }
            })
            .collect(),
        Mode::Chain => {
            let mut env = Vec::new();
            let mut outputs = Vec::new();
            for s in &stages {
                env.extend(settings_env(s.name, &s.settings));
                outputs.extend(s.outputs.iter().cloned());
            }
            // Requests off their user's partition are forwarded back to the intake.
            outputs.push(c.requests.clone());
            outputs.sort();
            outputs.dedup();
            vec![Spec {
                name: "chain",
                env,
                inputs: vec![c.requests.clone()],
                outputs,
            }]
        }
    }
}

/// Every process of the pipeline with its settings: the stages, delivery, retry.
pub fn specs(topics: &Topics, mode: Mode) -> Vec<Spec> {
    let c = &topics.chain;
    let mut specs = stage_specs(topics, mode);
    for (name, input) in PROCESSORS[5..9].iter().zip(&c.channels) {
        let settings = vec![
            ("INPUT", input.clone()),
            ("RETRY_TOPIC", topics.retry[0].clone()),
            ("TOKEN_FEEDBACK_TOPIC", c.feedback.clone()),
            // No provider rate limit: the sandbox is the only receiver.
            ("RATE_PER_SEC", "0.0".into()),
        ];
        specs.push(Spec {
            name,
            env: settings_env(name, &settings),
            inputs: vec![input.clone()],
            outputs: vec![
                c.status.clone(),
                topics.retry[0].clone(),
                c.feedback.clone(),
            ],
        });
    }
    let step = |name: &str, ms: u64, topic: &str| {
        format!("{{ name = {name:?}, delay_ms = {ms}, topic = {topic:?} }}")
    };
    let retry = vec![
        (
            "STEPS",
            format!(
                "[{}, {}]",
                step("10s", 10_000, &topics.retry[0]),
                step("1m", 60_000, &topics.retry[1])
            ),
        ),
        ("DEFERRED_TOPIC", c.deferred.clone()),
    ];
    let mut retry_outputs = c.channels.to_vec();
    retry_outputs.push(topics.retry[1].clone());
    specs.push(Spec {
        name: "retry",
        env: settings_env("retry", &retry),
        inputs: topics.retry.to_vec(),
        outputs: retry_outputs,
    });
    specs
}

/// Starts every process of `mode`; the delivery processors read the sandbox's provider
/// tables. When one cannot be started, those already running are stopped.
pub async fn spawn_all(
    ctx: &Ctx,
    topics: &Topics,
    keyspace: &str,
    sandbox: &Sandbox,
    mode: Mode,
) -> anyhow::Result<Vec<Started>> {
    let prefix = format!("{}-pipe-{}", ctx.run_id, mode.label());
    let mut running: Vec<Started> = Vec::new();
    for spec in specs(topics, mode) {
        let mut env = stages::process_env(ctx, &topics.chain, keyspace, spec.name, &[]);
        env.extend(spec.env);
        if spec.name.starts_with("deliver-") {
            env.push((
                "NOTIFY_CONFIG".into(),
                sandbox.delivery_config.display().to_string(),
            ));
        }
        match stage::spawn(&ctx.notify_bin, spec.name, &prefix, &env, &spec.outputs) {
            Ok(r) => running.push(Started {
                running: r,
                inputs: spec.inputs,
                outputs: spec.outputs,
            }),
            Err(e) => {
                for s in running {
                    let _ = s.running.stop().await;
                }
                return Err(e);
            }
        }
    }
    Ok(running)
}
