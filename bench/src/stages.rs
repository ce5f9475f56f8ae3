//! Each stage alone on a pre-filled input. The stages run one after the other as a chain, each
//! on the complete output of the one before (so every input is realistic: the preference
//! filter's routed notifications feed dedup, and so on), each in its own process.

use anyhow::Context as _;
use notify_runtime::codec::AvroCodec;
use notify_runtime::records::{Channel, Device, Platform, Template, UserProfile};

use crate::Ctx;
use crate::kafka::{Kafka, Pipelined};
use crate::stage::{self, Drain, Sample};
use crate::workload::{CATEGORIES, user_id};

#[derive(Debug, Clone, Default)]
pub struct StageResult {
    pub drain: Drain,
    pub peak_rss_mib: f64,
    /// True when the stage calls the CQL database per record (dedup, rate limits).
    pub external_io: bool,
    pub samples: Vec<Sample>,
    /// Where its CPU went while it drained (perf), when profiled.
    pub profile: Option<crate::profile::Profile>,
}

/// Topics of the chain, named for this run.
pub struct Chain {
    pub requests: String,
    pub users: String,
    pub templates: String,
    pub feedback: String,
    pub routed: String,
    pub deduped: String,
    pub rendered: String,
    pub limited: String,
    pub channels: [String; 4],
    pub status: String,
    pub deferred: String,
    pub dlq: String,
}

impl Chain {
    pub fn new(ctx: &Ctx, requests: &str, dlq: &str) -> Chain {
        Chain {
            requests: requests.into(),
            users: ctx.topic("users"),
            templates: ctx.topic("templates"),
            feedback: ctx.topic("token-feedback"),
            routed: ctx.topic("stage-preferences"),
            deduped: ctx.topic("stage-deduped"),
            rendered: ctx.topic("stage-rendered"),
            limited: ctx.topic("stage-limited"),
            channels: ["apns", "fcm", "sms", "email"].map(|c| ctx.topic(&format!("channel-{c}"))),
            status: ctx.topic("status"),
            deferred: ctx.topic("deferred"),
            dlq: dlq.into(),
        }
    }

    /// Inputs written by the harness (plain timestamps), outputs stamped at append.
    pub fn topics(&self) -> (Vec<String>, Vec<String>) {
        let inputs = vec![
            self.users.clone(),
            self.templates.clone(),
            self.feedback.clone(),
        ];
        let mut outputs = vec![
            self.routed.clone(),
            self.deduped.clone(),
            self.rendered.clone(),
            self.limited.clone(),
            self.status.clone(),
            self.deferred.clone(),
        ];
        outputs.extend(self.channels.iter().cloned());
        (inputs, outputs)
    }
}

/// One profile per user: push device, e-mail and phone, a few opt-outs.
/// Which user profiles the reference data holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profiles {
    /// One device each, iOS or Android; some opt-outs (the stage runs' mix).
    Mixed,
    /// An iOS and an Android device and a phone each, no opt-outs: a request to push and SMS
    /// is three provider calls.
    ThreeChannels,
}

pub async fn fill_reference_data(
    kafka: &Kafka,
    codec: &AvroCodec,
    chain: &Chain,
    users: u64,
    profiles: Profiles,
) -> anyhow::Result<()> {
    // Profiles keyed as the project's (and the Java client's) partitioner puts them.
    let mut out = Pipelined::new(crate::kafka::bulk_producer_with(
        &kafka.bootstrap,
        "murmur2_random",
    )?);
    for i in 0..users {
        let id = user_id(i);
        let mixed = profiles == Profiles::Mixed;
        let token = |n: u64| format!("{:064x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let devices = if mixed {
            vec![Device {
                token: token(i),
                platform: if i % 2 == 0 {
                    Platform::Ios
                } else {
                    Platform::Android
                },
                enabled: true,
            }]
        } else {
            [Platform::Ios, Platform::Android]
                .into_iter()
                .enumerate()
                .map(|(d, platform)| Device {
                    token: token(2 * i + d as u64 + 1),
                    platform,
                    enabled: true,
                })
                .collect()
        };
        let profile = UserProfile {
            user_id: id.clone(),
            email: Some(format!("{id}@example.com")),
            phone: Some(format!("+4915{:09}", i)),
            devices,
            locale: "en".into(),
            timezone: "UTC".into(),
            opt_out_channels: if mixed && i % 20 == 0 {
                vec![Channel::Sms]
            } else {
                Vec::new()
            },
            opt_out_categories: if mixed && i % 10 == 0 {
                vec!["marketing".into()]
            } else {
                Vec::new()
            },
            quiet_hours: None,
        };
        let value = codec.encode(&chain.users, &profile).await?;
        out.send(&chain.users, &id, &value).await?;
    }
    for (_, template_id) in CATEGORIES {
        for channel in Channel::ALL {
            let t = Template {
                template_id: template_id.to_string(),
                channel,
                locale: "en".into(),
                title: Some("Hello {{ name }}".into()),
                body: "Your {{ amount }} for order {{ order }}: {{ link }}".into(),
                html_body: (channel == Channel::Email)
                    .then(|| "<p>Your <b>{{ amount }}</b> for {{ order }}</p>".into()),
                truncate: true,
            };
            let value = codec.encode(&chain.templates, &t).await?;
            out.send(&chain.templates, &t.key(), &value).await?;
        }
    }
    out.flush().await
}

/// One stage's process: its input, every topic it writes and its settings (env keys).
pub struct StageSpec {
    pub name: &'static str,
    pub input: String,
    pub outputs: Vec<String>,
    pub settings: Vec<(&'static str, String)>,
    pub external_io: bool,
}

pub fn specs(c: &Chain) -> Vec<StageSpec> {
    let s = |k: &'static str, v: &String| (k, v.clone());
    vec![
        StageSpec {
            name: "preferences",
            input: c.requests.clone(),
            outputs: vec![c.routed.clone(), c.status.clone(), c.deferred.clone()],
            settings: vec![
                s("REQUESTS_TOPIC", &c.requests),
                s("USERS_TOPIC", &c.users),
                s("TOKEN_FEEDBACK_TOPIC", &c.feedback),
                s("OUTPUT", &c.routed),
                s("DEFERRED_TOPIC", &c.deferred),
            ],
            external_io: false,
        },
        StageSpec {
            name: "dedup",
            input: c.routed.clone(),
            outputs: vec![c.deduped.clone(), c.status.clone()],
            settings: vec![s("INPUT", &c.routed), s("OUTPUT", &c.deduped)],
            external_io: true,
        },
        StageSpec {
            name: "templates",
            input: c.deduped.clone(),
            outputs: vec![c.rendered.clone(), c.status.clone()],
            settings: vec![
                s("INPUT", &c.deduped),
                s("OUTPUT", &c.rendered),
                s("TEMPLATES_TOPIC", &c.templates),
            ],
            external_io: false,
        },
        StageSpec {
            name: "ratelimit",
            input: c.rendered.clone(),
            outputs: vec![c.limited.clone(), c.status.clone()],
            settings: vec![
                s("INPUT", &c.rendered),
                s("OUTPUT", &c.limited),
                // One realistic rule: at most 100 sends per user per hour over all channels.
                ("RULES", "[{ max = 100, window_secs = 3600 }]".into()),
            ],
            external_io: true,
        },
        StageSpec {
            name: "fanout",
            input: c.limited.clone(),
            outputs: c
                .channels
                .iter()
                .cloned()
                .chain([c.status.clone()])
                .collect(),
            settings: vec![
                s("INPUT", &c.limited),
                s("APNS_TOPIC", &c.channels[0]),
                s("FCM_TOPIC", &c.channels[1]),
                s("SMS_TOPIC", &c.channels[2]),
                s("EMAIL_TOPIC", &c.channels[3]),
            ],
            external_io: false,
        },
    ]
}

/// Runs every stage of the chain in order; a stage that fails is reported and ends the chain
/// (the next has no input).
pub async fn run(
    ctx: &Ctx,
    chain: &Chain,
    keyspace: &str,
) -> Vec<(String, anyhow::Result<StageResult>)> {
    let mut results = Vec::new();
    for spec in specs(chain) {
        tracing::info!(stage = spec.name, "stage alone");
        let r = run_one(ctx, chain, keyspace, &spec, spec.name).await;
        let failed = r.is_err();
        results.push((spec.name.to_string(), r));
        if failed {
            break;
        }
    }
    results
}

/// The environment of one processor's process: the stack, the keyspace, the chain's status
/// and dead-letter topics, its lanes as deployed (`crate::pipeline::lanes_of`, the same in a
/// stage run and in the pipeline) and its own settings (`NOTIFY_PROCESSORS__<NAME>__<KEY>`).
pub fn process_env(
    ctx: &Ctx,
    chain: &Chain,
    keyspace: &str,
    name: &str,
    settings: &[(&'static str, String)],
) -> Vec<(String, String)> {
    let upper = name.to_ascii_uppercase();
    let mut env: Vec<(String, String)> = vec![
        (
            "NOTIFY_KAFKA__BOOTSTRAP_SERVERS".into(),
            ctx.kafka.bootstrap.clone(),
        ),
        ("NOTIFY_REGISTRY__URL".into(), ctx.registry.clone()),
        ("NOTIFY_CQL__KEYSPACE".into(), keyspace.into()),
        ("NOTIFY_RUNTIME__STATUS_TOPIC".into(), chain.status.clone()),
        ("NOTIFY_RUNTIME__DLQ_TOPIC".into(), chain.dlq.clone()),
    ];
    let default_lanes = notify_runtime::config::RuntimeConfig::default().lanes;
    // Dedup sizes its own lanes (setting `lanes`).
    if let Some(lanes) = crate::pipeline::lanes_of(name).filter(|l| *l != default_lanes)
        && name != "dedup"
    {
        env.push(("NOTIFY_RUNTIME__LANES".into(), lanes.to_string()));
    }
    for (k, v) in settings {
        env.push((format!("NOTIFY_PROCESSORS__{upper}__{k}"), v.clone()));
    }
    env
}

/// The dedup stage with the naive scheme (`scheme = "naive"`): one `INSERT … IF NOT EXISTS`
/// per event and nothing in front, writing to
/// `output`. Everything else (process, lanes, in-flight bound, outputs) is dedup's own, so the
/// comparison is of the schemes alone.
pub async fn run_naive_dedup(
    ctx: &Ctx,
    chain: &Chain,
    keyspace: &str,
    output: &str,
) -> anyhow::Result<StageResult> {
    let mut spec = specs(chain)
        .into_iter()
        .find(|s| s.name == "dedup")
        .context("the chain has a dedup stage")?;
    spec.outputs = vec![output.to_string(), chain.status.clone()];
    spec.settings = vec![
        ("INPUT", chain.routed.clone()),
        ("OUTPUT", output.to_string()),
        ("SCHEME", "naive".into()),
    ];
    run_one(ctx, chain, keyspace, &spec, "dedup-naive").await
}

/// Runs `spec` as its own process (a consumer group of its own, named by `label`) until it
/// has consumed its whole input.
async fn run_one(
    ctx: &Ctx,
    chain: &Chain,
    keyspace: &str,
    spec: &StageSpec,
    label: &str,
) -> anyhow::Result<StageResult> {
    let records = ctx.kafka.scan(&spec.input, |_| {})?;
    let env = process_env(ctx, chain, keyspace, spec.name, &spec.settings);
    let prefix = format!("{}-stage-{label}", ctx.run_id);
    let mut running = stage::spawn(&ctx.notify_bin, spec.name, &prefix, &env, &spec.outputs)?;
    let profiler = ctx.profiler(&mut running, label).await;
    let drained = running
        .drain(
            &ctx.kafka,
            records as i64,
            records,
            ctx.stage_timeout(records),
        )
        .await;
    let profile = match profiler {
        Some(p) => p.finish().await,
        None => None,
    };
    let peak = running.peak_rss_mib();
    let samples = running.stop().await?;
    Ok(StageResult {
        drain: drained?,
        peak_rss_mib: peak,
        external_io: spec.external_io,
        samples,
        profile,
    })
}
