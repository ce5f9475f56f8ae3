//! Claims per second of the two CQL ledgers alone (no Kafka), `concurrency` claimers at once:
//! `cargo run -p notify-dedup --example ledger_rate --release [-- <claims> <concurrency> <buckets>]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use notify_dedup::{BatchLedger, Claim, CqlLedger, Ledger};
use notify_runtime::Config;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn rate<L: Ledger>(ledger: &L, prefix: &str, n: usize, concurrency: usize) -> f64 {
    let started = Instant::now();
    let claims = (0..n).map(|i| Claim {
        event_id: format!("{prefix}-{i}"),
        owner: format!("t/0/{i}"),
        out_partition: 0,
        scan_from: 0,
        at_ms: notify_runtime::now_ms(),
    });
    let failed = futures::stream::iter(claims)
        .map(|c| async move { ledger.claim(&c).await.is_err() })
        .buffer_unordered(concurrency)
        .filter(|e| futures::future::ready(*e))
        .count()
        .await;
    let secs = started.elapsed().as_secs_f64();
    if failed > 0 {
        eprintln!("{prefix}: {failed} claims failed");
    }
    n as f64 / secs
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let mut next = |d: usize| args.next().and_then(|a| a.parse().ok()).unwrap_or(d);
    let (n, concurrency, buckets) = (next(10_000), next(256), next(64));
    let mut config = Config::load(None)?;
    let run = notify_runtime::now_ms();
    config.cql.keyspace = format!("bench_ledger_{run}");
    let session = Arc::new(notify_runtime::cql::connect(&config.cql).await?);
    notify_runtime::cql::migrate(&session, &config.cql).await?;
    let ks = config.cql.keyspace.clone();
    let (window, timeout) = (Duration::from_secs(3600), Duration::from_secs(10));
    for c in [8, concurrency] {
        let per_id = CqlLedger::new(session.clone(), &ks, window, timeout).await?;
        println!(
            "per-id ledger, {c:>4} at once: {:>8.0} claims/s",
            rate(&per_id, &format!("p{c}"), n, c).await
        );
    }
    let batched = BatchLedger::new(session.clone(), &ks, window, timeout, buckets, 64).await?;
    println!(
        "batched ledger ({buckets} buckets), {concurrency:>4} at once: {:>8.0} claims/s",
        rate(&batched, "b", n, concurrency).await
    );
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ())
        .await?;
    Ok(())
}
