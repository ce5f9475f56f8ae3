//! A replay run's plan and checkpoint: `<state dir>/<run id>.json`.
//!
//! The plan (source, target, resolved ranges, selection, options) is written before the first
//! copy, so `--resume` continues the same run whatever flags it is given. The checkpoint part
//! (next offset and counters per partition) is written after each committed transaction. The
//! copy of that position that `--resume` trusts is the one committed to Kafka with the
//! records (see `copy.rs`); the file is what a person reads, and the fallback before any
//! commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::select::Selection;
use crate::scan::Range;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub run_id: String,
    pub source: String,
    pub target: String,
    pub ranges: Vec<Range>,
    pub selection: Selection,
    pub force: bool,
    pub created_at_ms: i64,
}

/// What happened to the records of one partition so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub read: u64,
    pub written: u64,
    /// Records not copied, by reason (`category`, `expired`, `undecodable`, ...).
    pub filtered: BTreeMap<String, u64>,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.read += other.read;
        self.written += other.written;
        for (reason, n) in &other.filtered {
            *self.filtered.entry(reason.clone()).or_default() += n;
        }
    }

    pub fn filtered_total(&self) -> u64 {
        self.filtered.values().sum()
    }
}

/// Where one partition stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The next source offset to copy.
    pub next: i64,
    pub counters: Counters,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub plan: Plan,
    pub positions: BTreeMap<i32, Position>,
    pub finished: bool,
}

impl Checkpoint {
    pub fn new(plan: Plan) -> Checkpoint {
        let positions = plan
            .ranges
            .iter()
            .map(|r| {
                (
                    r.partition,
                    Position {
                        next: r.start,
                        counters: Counters::default(),
                    },
                )
            })
            .collect();
        Checkpoint {
            plan,
            positions,
            finished: false,
        }
    }

    pub fn totals(&self) -> Counters {
        let mut total = Counters::default();
        for p in self.positions.values() {
            total.add(&p.counters);
        }
        total
    }

    /// Records left to read, at most (offsets between each position and its range's end).
    pub fn remaining(&self) -> u64 {
        self.plan
            .ranges
            .iter()
            .map(|r| {
                let next = self.positions.get(&r.partition).map_or(r.start, |p| p.next);
                (r.end - next.max(r.start)).max(0) as u64
            })
            .sum()
    }

    /// The ranges still to read.
    pub fn remaining_ranges(&self) -> Vec<Range> {
        self.plan
            .ranges
            .iter()
            .map(|r| Range {
                start: self
                    .positions
                    .get(&r.partition)
                    .map_or(r.start, |p| p.next.max(r.start)),
                ..*r
            })
            .filter(|r| !r.is_empty())
            .collect()
    }

    pub fn path(state_dir: &Path, run_id: &str) -> PathBuf {
        state_dir.join(format!("{run_id}.json"))
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a checkpoint.
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", state_dir.display()))?;
        let path = Self::path(state_dir, &self.plan.run_id);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        Ok(())
    }

    pub fn load(state_dir: &Path, run_id: &str) -> anyhow::Result<Checkpoint> {
        let path = Self::path(state_dir, run_id);
        let bytes = std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!("no checkpoint for run {run_id} at {} ({e})", path.display())
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a replay checkpoint: {e}", path.display()))
    }
}

/// `--state-dir`, else `$XDG_STATE_HOME/notify/replay`, else `.run/replay`.
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(base) => PathBuf::from(base).join("notify/replay"),
        None => PathBuf::from(".run/replay"),
    }
}

/// A short random run id (8 hex digits): printed at the start, carried in every copy's header.
pub fn new_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            run_id: "0badcafe".into(),
            source: "s".into(),
            target: "t".into(),
            ranges: vec![
                Range {
                    partition: 0,
                    start: 10,
                    end: 20,
                },
                Range {
                    partition: 1,
                    start: 0,
                    end: 5,
                },
            ],
            selection: Selection::default(),
            force: false,
            created_at_ms: 1,
        }
    }

    #[test]
    fn saves_loads_and_knows_what_is_left() {
        let dir = std::env::temp_dir().join(format!("notify-ckpt-{}", new_run_id()));
        let mut c = Checkpoint::new(plan());
        assert_eq!(c.remaining(), 15);
        let p0 = c.positions.get_mut(&0).expect("partition 0");
        p0.next = 15;
        p0.counters.read = 5;
        p0.counters.filtered.insert("user".into(), 2);
        c.positions.get_mut(&1).expect("partition 1").next = 5;
        c.save(&dir).expect("saved");
        let back = Checkpoint::load(&dir, "0badcafe").expect("loaded");
        assert_eq!(back.remaining(), 5);
        assert_eq!(
            back.remaining_ranges(),
            vec![Range {
                partition: 0,
                start: 15,
                end: 20
            }]
        );
        assert_eq!(back.totals().filtered_total(), 2);
        assert!(Checkpoint::load(&dir, "missing").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
