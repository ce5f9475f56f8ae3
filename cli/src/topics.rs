//! `notify topics apply`: makes the broker match `topics/topics.toml`.
//!
//! Creates missing topics, adds partitions where the file asks for more, and alters the
//! configs the file names where they differ. It never deletes a topic or removes partitions.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use serde::Deserialize;

use notify_runtime::Config;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsFile {
    pub defaults: Defaults,
    #[serde(rename = "topic")]
    pub topics: Vec<TopicSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub partitions: i32,
    pub replication_factor: i32,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    /// Full name of the Avro record carried as value (None: raw bytes, e.g. dead letters).
    pub value: Option<String>,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i32>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl TopicsFile {
    pub fn load(path: &Path) -> anyhow::Result<TopicsFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// One change `apply` makes (or would make with `--dry-run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create {
        topic: String,
        partitions: i32,
        replication: i32,
    },
    AddPartitions {
        topic: String,
        from: i32,
        to: i32,
    },
    AlterConfig {
        topic: String,
        key: String,
        from: Option<String>,
        to: String,
    },
    /// The file asks for fewer partitions than exist; Kafka cannot shrink a topic.
    CannotShrink {
        topic: String,
        have: i32,
        want: i32,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create {
                topic,
                partitions,
                replication,
            } => {
                write!(
                    f,
                    "create {topic} (partitions={partitions}, replication={replication})"
                )
            }
            Change::AddPartitions { topic, from, to } => {
                write!(f, "grow {topic} partitions {from} -> {to}")
            }
            Change::AlterConfig {
                topic,
                key,
                from,
                to,
            } => {
                write!(
                    f,
                    "set {topic} {key}: {} -> {to}",
                    from.as_deref().unwrap_or("(default)")
                )
            }
            Change::CannotShrink { topic, have, want } => {
                write!(
                    f,
                    "warning: {topic} has {have} partitions, file says {want}; Kafka cannot shrink, left as is"
                )
            }
        }
    }
}

pub fn admin(config: &Config) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(notify_runtime::kafka::client_config(config).create()?)
}

/// Computes the plan and, unless `dry_run`, carries it out. Returns the changes.
pub async fn apply(
    config: &Config,
    file: &TopicsFile,
    replication_override: Option<i32>,
    dry_run: bool,
) -> anyhow::Result<Vec<Change>> {
    let admin = admin(config)?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach Kafka at {}: {e}",
                config.kafka.bootstrap_servers
            )
        })?;
    let existing: BTreeMap<String, i32> = metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect();

    let mut plan = Vec::new();
    for spec in &file.topics {
        let partitions = spec.partitions.unwrap_or(file.defaults.partitions);
        let replication = replication_override
            .or(spec.replication_factor)
            .unwrap_or(file.defaults.replication_factor);
        match existing.get(&spec.name) {
            None => plan.push(Change::Create {
                topic: spec.name.clone(),
                partitions,
                replication,
            }),
            Some(&have) if have < partitions => plan.push(Change::AddPartitions {
                topic: spec.name.clone(),
                from: have,
                to: partitions,
            }),
            Some(&have) if have > partitions => plan.push(Change::CannotShrink {
                topic: spec.name.clone(),
                have,
                want: partitions,
            }),
            Some(_) => {}
        }
        if existing.contains_key(&spec.name) {
            let current = describe_config(&admin, &spec.name).await?;
            for (key, want) in wanted_config(file, spec, replication) {
                let from = current.get(&key).cloned();
                if from.as_ref() != Some(&want) {
                    plan.push(Change::AlterConfig {
                        topic: spec.name.clone(),
                        key,
                        from,
                        to: want,
                    });
                }
            }
        }
    }
    if dry_run {
        return Ok(plan);
    }
    execute(&admin, file, &plan, replication_override).await?;
    wait_until_visible(&admin, &plan).await?;
    Ok(plan)
}

/// Waits until the broker's metadata lists every created topic: the controller has created it
/// when create_topics returns, but a broker may answer metadata from a slightly older view, and
/// whoever runs next (a processor, or apply again) must see the topic.
async fn wait_until_visible(
    admin: &AdminClient<DefaultClientContext>,
    plan: &[Change],
) -> anyhow::Result<()> {
    let created: Vec<&str> = plan
        .iter()
        .filter_map(|c| match c {
            Change::Create { topic, .. } => Some(topic.as_str()),
            _ => None,
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))?;
        let missing: Vec<&str> = created
            .iter()
            .copied()
            .filter(|t| {
                !metadata
                    .topics()
                    .iter()
                    .any(|m| m.name() == *t && m.error().is_none())
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("created but still not in the broker's metadata after 30 s: {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The file's configs for a topic; `min.insync.replicas` never exceeds the replication.
fn wanted_config(
    file: &TopicsFile,
    spec: &TopicSpec,
    replication: i32,
) -> BTreeMap<String, String> {
    let mut c = file.defaults.config.clone();
    c.extend(spec.config.clone());
    if let Some(min_isr) = c
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<i32>().ok())
        && min_isr > replication
    {
        c.insert("min.insync.replicas".into(), replication.max(1).to_string());
    }
    c
}

async fn describe_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let results = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await?;
    let mut out = BTreeMap::new();
    for result in results {
        let resource = result.map_err(|e| anyhow::anyhow!("describe {topic}: {e}"))?;
        for entry in resource.entries {
            if let Some(v) = entry.value {
                out.insert(entry.name, v);
            }
        }
    }
    Ok(out)
}

async fn execute(
    admin: &AdminClient<DefaultClientContext>,
    file: &TopicsFile,
    plan: &[Change],
    replication_override: Option<i32>,
) -> anyhow::Result<()> {
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let spec_of = |name: &str| file.topics.iter().find(|t| t.name == name);
    let mut configs_by_topic: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for change in plan {
        match change {
            Change::Create {
                topic,
                partitions,
                replication,
            } => {
                let spec =
                    spec_of(topic).ok_or_else(|| anyhow::anyhow!("unknown topic {topic}"))?;
                let config = wanted_config(file, spec, *replication);
                let mut new =
                    NewTopic::new(topic, *partitions, TopicReplication::Fixed(*replication));
                for (k, v) in &config {
                    new = new.set(k, v);
                }
                for r in admin.create_topics(&[new], &opts).await? {
                    r.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
                }
            }
            Change::AddPartitions { topic, to, .. } => {
                let grow = NewPartitions::new(topic, *to as usize);
                for r in admin.create_partitions(&[grow], &opts).await? {
                    r.map_err(|(t, e)| anyhow::anyhow!("grow {t}: {e}"))?;
                }
            }
            Change::AlterConfig { topic, .. } => {
                // Non-incremental AlterConfigs replaces the topic's whole set, so send every
                // config the file names for that topic at once.
                let spec =
                    spec_of(topic).ok_or_else(|| anyhow::anyhow!("unknown topic {topic}"))?;
                let replication = replication_override
                    .or(spec.replication_factor)
                    .unwrap_or(file.defaults.replication_factor);
                configs_by_topic.insert(topic.clone(), wanted_config(file, spec, replication));
            }
            Change::CannotShrink { .. } => {}
        }
    }
    for (topic, config) in &configs_by_topic {
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (k, v) in config {
            alter = alter.set(k, v);
        }
        for r in admin.alter_configs(&[alter], &opts).await? {
            r.map_err(|(_, e)| anyhow::anyhow!("alter {topic}: {e}"))?;
        }
    }
    Ok(())
}
