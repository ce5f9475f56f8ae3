//! The figures of a run, from the topics read back after the processes stopped and from the
//! CPU samples taken while they ran.

use super::procs::Topics;
use super::{PipelineResult, Process, analyse, cpu};
use crate::Ctx;

pub struct Read<'a> {
    /// When the processors were started (ms): the zero of the timelines.
    pub started: i64,
    pub tracked: &'a [cpu::Tracked],
    /// Peak RSS of the processors then the sandbox, in `tracked` order.
    pub peaks: &'a [f64],
    pub samples: &'a [cpu::Sample],
}

impl Read<'_> {
    pub async fn into(
        self,
        ctx: &Ctx,
        topics: &Topics,
        r: &mut PipelineResult,
    ) -> anyhow::Result<()> {
        let (created, all_created) = analyse::requests(ctx, &topics.chain.requests).await?;
        let statuses = analyse::statuses(ctx, &topics.chain.status).await?;
        let first_phase = r.loads.first().map_or(i64::MAX, |l| l.from_ms);
        let drain = analyse::drain(&statuses, &created, first_phase);
        r.terminal = drain.terminal;
        r.terminal_messages = drain.messages;
        r.seconds = drain.seconds();
        r.status_rate = drain.terminal as f64 / r.seconds;
        r.outcomes = drain.outcomes;
        for load in &mut r.loads {
            let (latencies, in_window) =
                analyse::phase(&statuses, &created, load.from_ms, load.to_ms);
            load.latencies_ms = latencies;
            let secs = ((load.to_ms - load.from_ms) as f64 / 1_000.0).max(0.001);
            load.statuses_per_s = in_window as f64 / secs;
        }
        let window = cpu::window(self.samples, drain.first, drain.last);
        r.machine_cores = window.as_ref().map_or(f64::NAN, |w| w.1);
        // Processors come first in `tracked`, in the order their times were read.
        let times = r.process_times.clone();
        r.processes = self
            .tracked
            .iter()
            .enumerate()
            .map(|(i, t)| Process {
                name: t.label.clone(),
                processor: t.processor,
                peak_rss_mib: self.peaks.get(i).copied().unwrap_or(f64::NAN),
                cores: window
                    .as_ref()
                    .and_then(|w| w.0.get(i).copied())
                    .unwrap_or(f64::NAN),
                processed: times.get(i).copied().flatten().map_or(f64::NAN, |t| t.0),
                process_s: times.get(i).copied().flatten().map_or(f64::NAN, |t| t.1),
            })
            .collect();
        r.statuses_timeline = analyse::per_second(
            statuses
                .iter()
                .filter(|s| analyse::terminal(s.outcome))
                .map(|s| s.at),
            self.started,
        );
        // The pre-filled requests were all written before the start: only the open loop shows.
        r.sent_timeline = analyse::per_second(all_created.into_iter(), self.started);
        Ok(())
    }
}
