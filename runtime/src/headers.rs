//! Header names the pipeline's processors agree on (besides the dead-letter and retry
//! headers of `dlq`).

/// A record replayed on purpose by `notify replay` or `notify dlq redrive`: the run's id.
/// Dedup lets it through; the delivery ledger sends only what was never delivered.
pub const REPLAY_RUN: &str = "notify.replay.run";

/// On a channel message written inside a committed transaction by the chain (or fan-out run
/// exactly-once): it exists once, so delivery needs no ledger read for it unless its partition
/// changed owner since it was written.
pub const EXACTLY_ONCE: &str = "notify.exactly-once";

/// On a request forwarded to its user's partition: `topic/partition/offset` it copies.
pub const FORWARDED_FROM: &str = "notify.forwarded.from";
