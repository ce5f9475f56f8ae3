//! Dedup throughput against the naive scheme (one `INSERT … IF NOT EXISTS` per event, output
//! through the runtime) in the same run, on the same input, on the local stack:
//!
//! ```sh
//! cargo run -p notify-dedup --example dedup_vs_naive --release [-- <records> <dedup lanes>]
//! ```
//!
//! The input has 20% duplicate ids on other keys. Each scheme gets its own consumer group,
//! ledger table and output topic; throughput is records consumed per second from the first
//! record to the last acknowledgement. The naive scheme runs twice: with the runtime's default
//! lanes and with as many lanes as dedup. Duplicates let through are counted on each output.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify_runtime::codec::AvroCodec;
use notify_runtime::records::{NotificationRequest, Priority, RoutedNotification};
use notify_runtime::{CancellationToken, Config, Output, ProcessError, Processor, RecordMeta};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One LWT per event, nothing in front of it.
struct Naive {
    session: Arc<Session>,
    insert: PreparedStatement,
    output: String,
}

impl Processor for Naive {
    type Input = RoutedNotification;

    async fn process(
        &self,
        r: RoutedNotification,
        meta: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        let result = self
            .session
            .execute_unpaged(&self.insert, (&r.request.event_id,))
            .await
            .map_err(ProcessError::transient)?;
        let row: Option<Row> = result
            .into_rows_result()
            .map_err(ProcessError::transient)?
            .maybe_first_row::<Row>()
            .map_err(ProcessError::transient)?;
        match row.and_then(|r| r.columns.into_iter().next().flatten()) {
            Some(CqlValue::Boolean(true)) => {
                let key = meta.key.clone().unwrap_or_default();
                Ok(vec![Output::record(&self.output, key, r)])
            }
            Some(CqlValue::Boolean(false)) => Ok(vec![]),
            other => Err(ProcessError::transient(format!("LWT answered {other:?}"))),
        }
    }
}

fn routed(id: &str, user: &str) -> RoutedNotification {
    RoutedNotification {
        request: NotificationRequest {
            event_id: id.into(),
            user_id: user.into(),
            category: "billing".into(),
            template_id: "invoice_due".into(),
            data: BTreeMap::new(),
            channels: vec![],
            priority: Priority::Normal,
            created_at: notify_runtime::now_ms(),
            expires_at: None,
            source: "bench".into(),
            email: None,
            phone: None,
        },
        locale: "en".into(),
        timezone: "UTC".into(),
        user: BTreeMap::new(),
        targets: vec![],
        rendered: vec![],
    }
}

async fn fill(config: &Config, topic: &str, n: usize) -> Result<usize, Error> {
    let codec = AvroCodec::new(&config.registry)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("linger.ms", "10")
        .create()?;
    let distinct = n - n / 5;
    let mut pending = Vec::new();
    for i in 0..n {
        let id = format!(
            "e-{}",
            if i < distinct {
                i
            } else {
                (i * 7919) % distinct
            }
        );
        let user = format!("user-{}", (i * 31) % 1_000);
        let bytes = codec.encode(topic, &routed(&id, &user)).await?;
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
            .key(user.as_str())
            .payload(bytes.as_slice());
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for d in pending {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(distinct)
}

/// CPU seconds of this process so far (utime + stime of /proc/self/stat, 100 Hz ticks).
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
            Some((ticks(11)? + ticks(12)?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `processor` over `input` until `n` records are consumed and acknowledged; returns
/// records/s and this process's CPU µs per record over that time.
async fn drain<P: Processor>(
    processor: P,
    name: &str,
    config: Config,
    input: &str,
    n: usize,
) -> Result<(f64, f64), Error> {
    let token = CancellationToken::new();
    let spec = notify_runtime::RunSpec {
        name: name.into(),
        input_topics: vec![input.into()],
    };
    let running = notify_runtime::start(processor, spec, config, token.clone()).await?;
    let (consumed, in_flight) = (
        format!("notify_{name}_records_consumed_total"),
        format!("notify_{name}_in_flight_records"),
    );
    let mut first = None;
    let mut cpu_at_first = 0.0;
    let deadline = Instant::now() + Duration::from_secs(900);
    let rate = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = running.metrics.render();
        let c = metric(&text, &consumed);
        if c > 0.0 && first.is_none() {
            first = Some(Instant::now());
            cpu_at_first = cpu_secs();
        }
        if c >= n as f64 && metric(&text, &in_flight) == 0.0 {
            let secs = first.map_or(1.0, |f: Instant| f.elapsed().as_secs_f64());
            break (
                n as f64 / secs,
                (cpu_secs() - cpu_at_first) * 1e6 / n as f64,
            );
        }
        if Instant::now() > deadline {
            return Err(format!("{name}: not drained ({c} of {n})").into());
        }
    };
    token.cancel();
    let _ = running.done.await;
    Ok(rate)
}

/// Every value in `topic`, read until `n_expected` arrived and two quiet seconds passed.
fn read_ids(config: &Config, topic: &str, n_expected: usize) -> Result<Vec<Vec<u8>>, Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("group.id", "dedup-vs-naive-reader")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut idle = Instant::now();
    while Instant::now() < deadline
        && (out.len() < n_expected || idle.elapsed() < Duration::from_secs(2))
    {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(m?.payload().unwrap_or_default().to_vec());
            idle = Instant::now();
        }
    }
    Ok(out)
}

async fn duplicates(
    config: &Config,
    topic: &str,
    distinct: usize,
) -> Result<(usize, usize), Error> {
    let codec = AvroCodec::new(&config.registry)?;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for bytes in read_ids(config, topic, distinct)? {
        let r: RoutedNotification = codec.decode(Some(&bytes)).await?;
        *per_id.entry(r.request.event_id).or_default() += 1;
    }
    let records: usize = per_id.values().sum();
    Ok((records, records - per_id.len()))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let lanes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let mut config = Config::load(None)?;
    let run = notify_runtime::now_ms();
    config.cql.keyspace = format!("bench_dedup_{run}");
    config.kafka.group_prefix = format!("bench-dedup-{run}");
    config.http.listen = String::new();
    let t = |b: &str| format!("bench.dedup-vs-naive.{run}.{b}");
    let names = ["in", "dedup", "naive", "naive-wide", "status", "dlq"].map(t);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .create()?;
    let opts = AdminOptions::new();
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, 4, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(&new, &opts).await? {
        r.map_err(|(t, e)| format!("{t}: {e}"))?;
    }
    config.runtime.status_topic = names[4].clone();
    config.runtime.dlq_topic = names[5].clone();
    let session = Arc::new(notify_runtime::cql::connect(&config.cql).await?);
    notify_runtime::cql::migrate(&session, &config.cql).await?;
    let ks = &config.cql.keyspace;
    let distinct = fill(&config, &names[0], n).await?;
    println!("{n} records, {distinct} distinct ids, on {}", names[0]);

    let mut results = Vec::new();
    for (label, out, naive_lanes) in [
        ("naive", &names[2], config.runtime.lanes),
        ("naive_wide", &names[3], lanes),
    ] {
        let table = format!("{ks}.{label}_ledger");
        session
            .query_unpaged(
                format!("CREATE TABLE IF NOT EXISTS {table} (event_id text PRIMARY KEY)"),
                (),
            )
            .await?;
        let insert = session
            .prepare(format!(
                "INSERT INTO {table} (event_id) VALUES (?) IF NOT EXISTS USING TTL 86400"
            ))
            .await?;
        let naive = Naive {
            session: session.clone(),
            insert,
            output: out.clone(),
        };
        let mut c = config.clone();
        c.runtime.lanes = naive_lanes;
        c.runtime.max_in_flight = c.runtime.max_in_flight.max(naive_lanes * 64);
        let (rate, cpu) = drain(naive, label, c, &names[0], n).await?;
        results.push((
            format!("{label} ({naive_lanes} lanes)"),
            rate,
            cpu,
            duplicates(&config, out, distinct).await?,
        ));
    }
    let mut c = notify_dedup::with_lanes(config.clone(), lanes);
    c.processors.insert(
        "dedup".into(),
        toml::Value::Table(
            [("input", names[0].clone()), ("output", names[1].clone())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), toml::Value::String(v)))
                .collect(),
        ),
    );
    let stage = notify_dedup::build(&c, &CancellationToken::new()).await?;
    let (rate, cpu) = drain(stage, "dedup", c, &names[0], n).await?;
    results.push((
        format!("dedup ({lanes} lanes)"),
        rate,
        cpu,
        duplicates(&config, &names[1], distinct).await?,
    ));

    let base = results[0].1;
    for (label, rate, cpu, (records, dups)) in &results {
        println!(
            "{label:<24} {rate:>8.0} records/s  {:>5.2}x naive  {cpu:>5.0} CPU µs/record  {records} out, {dups} duplicates let through",
            rate / base
        );
    }
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ())
        .await?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    admin.delete_topics(&refs, &opts).await?;
    Ok(())
}
