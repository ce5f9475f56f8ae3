//! `notify backfill FILE...`: load history (requests, users, templates) from JSON lines or
//! Avro object container files into the pipeline's topics, at a controlled rate.
//!
//! Every record goes through the same parsing, validation and encoding as `notify produce`,
//! so a backfilled record is exactly what a producer would have written. Bad records are
//! reported as `file:line: reason` and skipped; with `--strict` every file is validated first
//! and nothing is written unless all of it is good.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use notify_runtime::records::{AvroRecord, NotificationRequest, Template, UserProfile};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::produce::{Kind, encode_line};
use crate::progress::{Pacer, Progress};

#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// JSON-lines files (the shape `notify produce` takes) or Avro object container files of
    /// NotificationRequest, UserProfile or Template records.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// What JSON lines are (default: told by each line's fields: event_id → request,
    /// channel and body → template, else user). Avro files say it in their schema.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Topic for every record (default: the contract topic of each record's type).
    #[arg(long)]
    pub topic: Option<String>,
    /// At most this many records a second (`500` or `500/s`).
    #[arg(long, value_parser = crate::progress::parse_rate)]
    pub rate: Option<f64>,
    /// Validate every file first and write nothing if any record is bad.
    #[arg(long)]
    pub strict: bool,
}

/// A record that was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub file: PathBuf,
    /// Line of a JSON-lines file, or position (from 1) of an Avro file's record.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

#[derive(Debug, Default)]
pub struct BackfillReport {
    pub read: usize,
    /// Records written per topic (none with --strict when anything was rejected).
    pub written: BTreeMap<String, usize>,
    pub rejected: Vec<Rejected>,
}

/// One record of a file: its position and its JSON form, or why it cannot be read.
struct Item {
    line: usize,
    parsed: Result<(Kind, String), String>,
}

/// `notify backfill`: loads, prints rejections and the summary; fails when any was rejected.
pub async fn run(config: &Config, args: &BackfillArgs) -> anyhow::Result<()> {
    let report = backfill(config, args).await?;
    for r in &report.rejected {
        eprintln!("{r}");
    }
    let written: usize = report.written.values().sum();
    println!(
        "read {} records from {} files: {written} written, {} rejected{}",
        report.read,
        args.files.len(),
        report.rejected.len(),
        if args.strict && !report.rejected.is_empty() {
            " (--strict: nothing written)"
        } else {
            ""
        }
    );
    for (topic, n) in &report.written {
        println!("  {n} -> {topic}");
    }
    anyhow::ensure!(
        report.rejected.is_empty(),
        "{} records rejected",
        report.rejected.len()
    );
    Ok(())
}

/// Loads the files; returns what was written and rejected.
pub async fn backfill(config: &Config, args: &BackfillArgs) -> anyhow::Result<BackfillReport> {
    anyhow::ensure!(
        args.kind != Some(Kind::Status),
        "backfill loads requests, users and templates; statuses are the pipeline's own"
    );
    let codec = AvroCodec::new(&config.registry)?;
    if args.strict {
        let check = load(config, &codec, args, false).await?;
        if !check.rejected.is_empty() {
            return Ok(check);
        }
    }
    load(config, &codec, args, true).await
}

async fn load(
    config: &Config,
    codec: &AvroCodec,
    args: &BackfillArgs,
    write: bool,
) -> anyhow::Result<BackfillReport> {
    let producer: FutureProducer = notify_runtime::kafka::producer_config(config).create()?;
    let mut report = BackfillReport::default();
    let mut pacer = Pacer::new(args.rate.filter(|_| write));
    let label = if write { "loaded" } else { "validated" };
    let mut progress = Progress::new(label, None);
    for file in &args.files {
        let mut pending: Vec<(usize, String, DeliveryFuture)> = Vec::new();
        for item in items(file, args.kind)? {
            report.read += 1;
            progress.inc(1);
            let reject = |line, reason| Rejected {
                file: file.clone(),
                line,
                reason,
            };
            let (kind, json) = match item.parsed {
                Ok(parsed) => parsed,
                Err(reason) => {
                    report.rejected.push(reject(item.line, reason));
                    continue;
                }
            };
            let topic = args
                .topic
                .clone()
                .unwrap_or_else(|| kind.default_topic().to_string());
            let encoded = match encode_line(codec, kind, &topic, &json).await {
                Ok(e) => e,
                Err(reason) => {
                    report.rejected.push(reject(item.line, reason));
                    continue;
                }
            };
            if !write {
                continue;
            }
            pacer.wait().await;
            let mut record: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(&topic).key(encoded.key.as_str());
            if let Some(v) = &encoded.value {
                record = record.payload(v.as_slice());
            }
            let delivery = producer.send_result(record).map_err(|(e, _)| {
                anyhow::anyhow!("{}:{}: cannot queue: {e}", file.display(), item.line)
            })?;
            pending.push((item.line, topic, delivery));
            if pending.len() >= 1000 {
                settle(file, &mut pending, &mut report).await;
            }
        }
        settle(file, &mut pending, &mut report).await;
    }
    producer.flush(Duration::from_secs(30))?;
    progress.finish();
    Ok(report)
}

async fn settle(
    file: &Path,
    pending: &mut Vec<(usize, String, DeliveryFuture)>,
    report: &mut BackfillReport,
) {
    for (line, topic, delivery) in pending.drain(..) {
        let failure = match delivery.await {
            Ok(Ok(_)) => {
                *report.written.entry(topic).or_default() += 1;
                continue;
            }
            Ok(Err((e, _))) => format!("not acknowledged: {e}"),
            Err(_) => "producer closed".to_string(),
        };
        report.rejected.push(Rejected {
            file: file.to_path_buf(),
            line,
            reason: failure,
        });
    }
}

/// The records of one file, Avro container or JSON lines (told apart by the Avro magic).
fn items(path: &Path, kind: Option<Kind>) -> anyhow::Result<Box<dyn Iterator<Item = Item>>> {
    let open = || {
        std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))
    };
    let mut magic = [0u8; 4];
    let is_avro = open()?.read_exact(&mut magic).is_ok() && magic == *b"Obj\x01";
    if is_avro {
        return avro_items(open()?, path);
    }
    let lines = BufReader::new(open()?).lines().enumerate();
    Ok(Box::new(lines.filter_map(move |(i, line)| {
        let parsed = match line {
            Err(e) => Err(format!("cannot read: {e}")),
            Ok(l) if l.trim().is_empty() => return None,
            Ok(l) => match kind.or_else(|| guess_kind(&l)) {
                Some(k) => Ok((k, l)),
                None => Err("cannot tell the record type from the line; give --kind".into()),
            },
        };
        Some(Item {
            line: i + 1,
            parsed,
        })
    })))
}

/// The record type of a JSON line from its fields (None when it is not a JSON object).
fn guess_kind(line: &str) -> Option<Kind> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let o = v.as_object()?;
    Some(if o.contains_key("event_id") {
        Kind::Request
    } else if o.contains_key("body") && o.contains_key("channel") {
        Kind::Template
    } else {
        Kind::User
    })
}

fn avro_items(file: std::fs::File, path: &Path) -> anyhow::Result<Box<dyn Iterator<Item = Item>>> {
    let reader = apache_avro::Reader::new(BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("{} is not a readable Avro file: {e}", path.display()))?;
    let name = reader.writer_schema().name().map(|n| n.fullname(None));
    let kind = match name.as_deref() {
        Some(NotificationRequest::FULL_NAME) => Kind::Request,
        Some(UserProfile::FULL_NAME) => Kind::User,
        Some(Template::FULL_NAME) => Kind::Template,
        other => anyhow::bail!(
            "{} holds {} records; backfill loads {}, {} or {}",
            path.display(),
            other.unwrap_or("unnamed"),
            NotificationRequest::FULL_NAME,
            UserProfile::FULL_NAME,
            Template::FULL_NAME
        ),
    };
    Ok(Box::new(reader.enumerate().map(move |(i, value)| {
        let parsed = value
            .map_err(|e| format!("cannot read the record: {e}"))
            .and_then(|v| to_json(kind, v))
            .map(|json| (kind, json));
        Item {
            line: i + 1,
            parsed,
        }
    })))
}

/// An Avro value of the file's schema as the JSON line `notify produce` would take.
fn to_json(kind: Kind, value: apache_avro::types::Value) -> Result<String, String> {
    fn typed<T: AvroRecord>(value: apache_avro::types::Value) -> Result<String, String> {
        let schema = apache_avro::Schema::parse_str(T::SCHEMA).map_err(|e| e.to_string())?;
        let resolved = value
            .resolve(&schema)
            .map_err(|e| format!("does not fit {}: {e}", T::FULL_NAME))?;
        let record: T = apache_avro::from_value(&resolved)
            .map_err(|e| format!("not a valid {}: {e}", T::FULL_NAME))?;
        serde_json::to_string(&record).map_err(|e| e.to_string())
    }
    match kind {
        Kind::Request => typed::<NotificationRequest>(value),
        Kind::User => typed::<UserProfile>(value),
        Kind::Template => typed::<Template>(value),
        Kind::Status => Err("statuses are not backfilled".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_record_type_from_the_fields() {
        assert_eq!(
            guess_kind(r#"{"event_id":"e","user_id":"u"}"#),
            Some(Kind::Request)
        );
        assert_eq!(
            guess_kind(r#"{"template_id":"t","channel":"SMS","locale":"en","body":"b"}"#),
            Some(Kind::Template)
        );
        assert_eq!(
            guess_kind(r#"{"user_id":"u","devices":[]}"#),
            Some(Kind::User)
        );
        assert_eq!(guess_kind("not json"), None);
    }

    #[test]
    fn reads_avro_container_files_and_json_lines() {
        let dir = std::env::temp_dir().join(format!("notify-backfill-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let schema = apache_avro::Schema::parse_str(UserProfile::SCHEMA).expect("schema");
        let mut writer = apache_avro::Writer::new(&schema, Vec::new()).expect("writer");
        let user = UserProfile {
            user_id: "u1".into(),
            email: None,
            phone: None,
            devices: vec![],
            locale: "en".into(),
            timezone: "UTC".into(),
            opt_out_channels: vec![],
            opt_out_categories: vec![],
            quiet_hours: None,
        };
        writer.append_ser(&user).expect("append");
        let avro = dir.join("users.avro");
        std::fs::write(&avro, writer.into_inner().expect("flush")).expect("write");
        let read: Vec<Item> = items(&avro, None).expect("avro opens").collect();
        assert_eq!(read.len(), 1);
        let (kind, json) = read[0].parsed.clone().expect("record reads");
        assert_eq!(kind, Kind::User);
        assert!(json.contains("\"user_id\":\"u1\""), "{json}");

        let lines = dir.join("mixed.jsonl");
        std::fs::write(&lines, "{\"user_id\":\"u\"}\n\n[1]\n").expect("write");
        let read: Vec<Item> = items(&lines, None).expect("lines open").collect();
        assert_eq!(read.iter().map(|i| i.line).collect::<Vec<_>>(), [1, 3]);
        assert!(read[1].parsed.is_err(), "an array is no record");
        let _ = std::fs::remove_dir_all(dir);
    }
}
