//! Memory of the preference filter's profile table with 1,000,000 profiles loaded:
//!
//! ```sh
//! cargo run -p notify-preferences --example table_rss --release [-- <profiles>]
//! ```
//!
//! Writes the profiles (push device, e-mail, phone, a few opt-outs: what the bench harness
//! writes) to a private topic on the local stack, loads `Table<UserProfile>` with every
//! partition, and prints VmRSS from /proc/self/status before and after. The topic is deleted
//! at the end.

use std::time::{Duration, Instant};

use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use notify_runtime::records::{Channel, Device, Platform, UserProfile};
use notify_runtime::table::Table;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

type Error = Box<dyn std::error::Error>;

fn vm_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn profile(i: u64) -> UserProfile {
    let id = format!("user-{i:08}");
    UserProfile {
        email: Some(format!("{id}@example.com")),
        phone: Some(format!("+4915{i:09}")),
        devices: vec![Device {
            token: format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            platform: if i.is_multiple_of(2) {
                Platform::Ios
            } else {
                Platform::Android
            },
            enabled: true,
        }],
        locale: "en".into(),
        timezone: "Europe/Berlin".into(),
        opt_out_channels: if i.is_multiple_of(20) {
            vec![Channel::Sms]
        } else {
            vec![]
        },
        opt_out_categories: if i.is_multiple_of(10) {
            vec!["marketing".into()]
        } else {
            vec![]
        },
        quiet_hours: None,
        user_id: id,
    }
}

async fn produce(config: &Config, topic: &str, n: u64) -> Result<(), Error> {
    let codec = AvroCodec::new(&config.registry)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let mut pending = Vec::with_capacity(20_000);
    for i in 0..n {
        let p = profile(i);
        let bytes = codec.encode(topic, &p).await?;
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
            .key(p.user_id.as_str())
            .payload(bytes.as_slice());
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
        if pending.len() == 20_000 {
            for d in pending.drain(..) {
                d.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for d in pending {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let config = Config::load(None)?;
    let topic = format!("bench.table-rss.{}", notify_runtime::now_ms());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .create()?;
    let options = AdminOptions::new();
    let new = NewTopic::new(&topic, 4, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for r in admin.create_topics([&new], &options).await? {
        r.map_err(|(t, e)| format!("create {t}: {e}"))?;
    }
    let started = Instant::now();
    let result = async {
        produce(&config, &topic, n).await?;
        println!("produced {n} profiles in {:.1?}", started.elapsed());
        let before = vm_rss_mib();
        let loading = Instant::now();
        let table = Table::<UserProfile>::global(&config, &topic).await?;
        if !table.sync(Instant::now(), Duration::from_secs(600)).await {
            return Err::<(), Error>("table did not catch up within 10 min".into());
        }
        let after = vm_rss_mib();
        println!(
            "table_rss: {} profiles loaded in {:.1?}; VmRSS {before:.0} MiB before, {after:.0} MiB after ({:.0} MiB for the table, {:.0} bytes per profile)",
            table.len(),
            loading.elapsed(),
            after - before,
            (after - before) * 1024.0 * 1024.0 / table.len().max(1) as f64
        );
        Ok(())
    }
    .await;
    admin.delete_topics(&[&topic], &options).await?;
    result
}
