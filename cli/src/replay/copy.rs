//! The copy loop: read the run's remaining ranges, select, copy with the replay header, and
//! checkpoint.
//!
//! Exactly once across Ctrl-C and crashes: the copies go out in Kafka transactions of a
//! transactional producer (`transactional.id` = `notify-replay-<run>`), and each transaction
//! also commits, with `send_offsets_to_transaction`, the next source offset of every partition
//! (and that partition's counters, as the offset's metadata) to the run's own consumer group.
//! Records and position are therefore committed together or not at all: a crash before the
//! commit leaves an open transaction that the next `init_transactions` with the same id
//! aborts (read_committed consumers never see those copies), and a crash after it leaves a
//! committed position that `--resume` reads back. The checkpoint file is written after each
//! commit; it can only lag the committed position, never lead it, so `--resume` trusts the
//! group's offsets whenever they are ahead of the file. (Writing the file first and
//! producing after would risk losing records; checking the target for the run's header on
//! resume would mean scanning the whole target.)

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::checkpoint::{Checkpoint, Counters, Position};
use super::select::Payload;
use crate::ledger::{Ledger, replay_decision};
use crate::progress::{Pacer, Progress};
use crate::scan::{self, Scan};

/// The run id on every copy: dedup lets such a record through, the delivery ledger decides.
pub const RUN_HEADER: &str = "notify.replay.run";
/// `topic/partition/offset` of the record copied (for tracing a copy back to its original).
pub const SOURCE_HEADER: &str = "notify.replay.source";
/// A transaction is committed after this many copies or this long, whichever first.
const BATCH: u64 = 500;
const BATCH_TIME: Duration = Duration::from_millis(500);
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer group that holds a run's committed position.
pub fn run_group(config: &Config, run_id: &str) -> String {
    format!("{}-replay-{run_id}", config.kafka.group_prefix)
}

/// How a copy ended.
#[derive(Debug, Default)]
pub struct CopyEnd {
    pub interrupted: bool,
    /// `replay --dry-run`: what the delivery ledger would do with the messages, by reason.
    pub ledger: BTreeMap<String, u64>,
}

/// Moves each partition's position to what the run's group committed, when that is ahead of
/// the file (a crash between a commit and the file write).
pub fn reconcile(config: &Config, checkpoint: &mut Checkpoint) -> anyhow::Result<usize> {
    let group = run_group(config, &checkpoint.plan.run_id);
    let consumer = scan::reader(config, &group)?;
    let mut tpl = TopicPartitionList::new();
    for r in &checkpoint.plan.ranges {
        tpl.add_partition(&checkpoint.plan.source, r.partition);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut moved = 0;
    for e in committed.elements_for_topic(&checkpoint.plan.source) {
        let (Offset::Offset(next), Some(pos)) =
            (e.offset(), checkpoint.positions.get_mut(&e.partition()))
        else {
            continue;
        };
        if next > pos.next {
            let counters: Counters = serde_json::from_str(e.metadata()).unwrap_or_default();
            *pos = Position { next, counters };
            moved += 1;
        }
    }
    Ok(moved)
}

fn transactional_producer(config: &Config, run_id: &str) -> anyhow::Result<FutureProducer> {
    let mut client = notify_runtime::kafka::producer_config(config);
    client
        .set("transactional.id", format!("notify-replay-{run_id}"))
        .set("transaction.timeout.ms", "60000");
    let producer: FutureProducer = client.create()?;
    // Fences and aborts whatever an interrupted or crashed incarnation left open.
    producer.init_transactions(TXN_TIMEOUT)?;
    producer.begin_transaction()?;
    Ok(producer)
}

/// Copies what is left of the run. `state_dir` None is a dry run: nothing is produced,
/// committed or saved, and `ledger` (when given) says what the delivery ledger would skip.
pub async fn copy(
    config: &Config,
    checkpoint: &mut Checkpoint,
    state_dir: Option<&Path>,
    rate: Option<f64>,
    stop: notify_runtime::CancellationToken,
    ledger: Option<&Ledger>,
) -> anyhow::Result<CopyEnd> {
    let plan = checkpoint.plan.clone();
    let codec = AvroCodec::new(&config.registry)?;
    let consumer = scan::reader(config, &run_group(config, &plan.run_id))?;
    let producer = match state_dir {
        Some(_) => Some(transactional_producer(config, &plan.run_id)?),
        None => None,
    };
    let ranges = checkpoint.remaining_ranges();
    let mut scan = Scan::new(&consumer, &plan.source, &ranges)?;
    let verb = if producer.is_some() {
        "copied"
    } else {
        "read (dry run)"
    };
    let mut progress = Progress::new(verb, Some(checkpoint.remaining()));
    let mut pacer = Pacer::new(rate);
    let mut end = CopyEnd::default();
    let channel_first = plan.source.contains(".channel.");
    let (mut in_txn, mut txn_started) = (0u64, Instant::now());
    loop {
        if stop.is_cancelled() {
            end.interrupted = true;
            break;
        }
        let Some(m) = scan.next_record()? else { break };
        let payload = Payload::decode(&codec, m.payload(), channel_first).await;
        let decision = match &payload {
            None => Err("undecodable"),
            Some(p) => plan.selection.decide(p, notify_runtime::now_ms()),
        };
        if decision.is_ok() && producer.is_some() {
            tokio::select! {
                _ = pacer.wait() => {}
                _ = stop.cancelled() => { end.interrupted = true; break; }
            }
        }
        progress.inc(1);
        let pos = checkpoint.positions.entry(m.partition()).or_default();
        pos.counters.read += 1;
        let (Ok(()), Some(mut payload)) = (decision, payload) else {
            let reason = decision.err().unwrap_or("undecodable");
            *pos.counters.filtered.entry(reason.into()).or_default() += 1;
            pos.next = m.offset() + 1;
            continue;
        };
        if plan.force {
            payload.derive_event_id(&plan.run_id);
        }
        match &producer {
            None => {
                if let Some(ledger) = ledger {
                    tally(ledger, &payload, plan.force, &mut end.ledger).await?;
                }
            }
            Some(producer) => {
                let value = if plan.force || plan.selection.ignore_expiry {
                    if plan.selection.ignore_expiry {
                        payload.clear_expiry();
                    }
                    payload.encode(&codec, &plan.target).await?
                } else {
                    m.payload().map(<[u8]>::to_vec).unwrap_or_default()
                };
                send(
                    producer,
                    &plan.target,
                    &plan.run_id,
                    &plan.source,
                    &m,
                    &value,
                )?;
                in_txn += 1;
            }
        }
        pos.counters.written += 1;
        pos.next = m.offset() + 1;
        if let (Some(producer), Some(dir)) = (&producer, state_dir)
            && (in_txn >= BATCH || txn_started.elapsed() >= BATCH_TIME)
        {
            commit(producer, &consumer, checkpoint, dir)?;
            (in_txn, txn_started) = (0, Instant::now());
        }
    }
    // Partitions read to their end (maybe with nothing selected) are finished.
    for r in &plan.ranges {
        if !end.interrupted
            && !scan.open().contains_key(&r.partition)
            && let Some(pos) = checkpoint.positions.get_mut(&r.partition)
        {
            pos.next = pos.next.max(r.end);
        }
    }
    checkpoint.finished = !end.interrupted && checkpoint.remaining() == 0;
    if let (Some(producer), Some(dir)) = (&producer, state_dir) {
        commit(producer, &consumer, checkpoint, dir)?;
        producer.commit_transaction(TXN_TIMEOUT)?;
    }
    progress.finish();
    Ok(end)
}

fn send(
    producer: &FutureProducer,
    target: &str,
    run_id: &str,
    source: &str,
    m: &OwnedMessage,
    value: &[u8],
) -> anyhow::Result<()> {
    let from = format!("{source}/{}/{}", m.partition(), m.offset());
    let mut headers = OwnedHeaders::new();
    if let Some(src) = m.headers() {
        for h in src
            .iter()
            .filter(|h| h.key != RUN_HEADER && h.key != SOURCE_HEADER)
        {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    headers = headers
        .insert(Header {
            key: RUN_HEADER,
            value: Some(run_id.as_bytes()),
        })
        .insert(Header {
            key: SOURCE_HEADER,
            value: Some(from.as_bytes()),
        });
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(target).headers(headers).payload(value);
    if let Some(k) = m.key() {
        record = record.key(k);
    }
    // The transaction's commit waits for every acknowledgement; the future is not needed.
    producer
        .send_result(record)
        .map(drop)
        .map_err(|(e, _)| anyhow::anyhow!("cannot queue a copy to {target}: {e}"))
}

/// Commits the open transaction with the positions, writes the file, opens the next one.
fn commit(
    producer: &FutureProducer,
    consumer: &BaseConsumer,
    checkpoint: &Checkpoint,
    state_dir: &Path,
) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (partition, pos) in &checkpoint.positions {
        tpl.add_partition_offset(
            &checkpoint.plan.source,
            *partition,
            Offset::Offset(pos.next),
        )?;
        if let Some(mut e) = tpl.find_partition(&checkpoint.plan.source, *partition) {
            e.set_metadata(serde_json::to_string(&pos.counters)?);
        }
    }
    let group = consumer
        .group_metadata()
        .ok_or_else(|| anyhow::anyhow!("the replay consumer has no group metadata"))?;
    producer.send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)?;
    producer.commit_transaction(TXN_TIMEOUT)?;
    checkpoint.save(state_dir)?;
    producer.begin_transaction()?;
    Ok(())
}

/// Dry run: what the delivery ledger would do with the record's messages.
async fn tally(
    ledger: &Ledger,
    payload: &Payload,
    force: bool,
    out: &mut BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let rows = if force {
        Vec::new()
    } else {
        ledger.rows(payload.event_id()).await?
    };
    let mine: Vec<_> = rows
        .iter()
        .filter(|r| r.user_id == payload.user_id())
        .filter(|r| match payload {
            Payload::Message(m) => {
                r.channel == m.channel.as_str() && r.full_recipient == m.recipient
            }
            Payload::Request(_) => true,
        })
        .collect();
    if mine.is_empty() {
        *out.entry(replay_decision(None, force).into()).or_default() += 1;
    }
    for row in mine {
        *out.entry(replay_decision(Some(&row.state), force).into())
            .or_default() += 1;
    }
    Ok(())
}
