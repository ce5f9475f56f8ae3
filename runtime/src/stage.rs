//! Stages that compose: the same stage runs alone in a process (its input decoded from a
//! topic, its output encoded to one) or chained with others in one process, passing records
//! in memory (Kafka Streams' sub-topology: stages that share a key need no topic between them).
//!
//! A stage turns one input into [`Emit`]: records for the next stage, records that leave
//! the pipeline here (status events, deferred requests, feedback), and optionally a dead
//! letter of the input. [`Then`] chains two stages; [`StageProcessor`] runs a stage (or a
//! chain) on the runtime.

use std::future::Future;

use crate::dlq::ErrorClass;
use crate::processor::{Decode, Output, ProcessError, Processor, RecordMeta};

/// Why the input of a stage is also dead-lettered (e.g. one channel could not be rendered
/// while the others go on).
#[derive(Debug, Clone)]
pub struct DeadLetterReason {
    pub stage: &'static str,
    pub class: ErrorClass,
    pub reason: String,
}

/// What a stage made of one input.
pub struct Emit<T> {
    /// Records for the next stage (for the last stage: for its output topic).
    pub next: Vec<T>,
    /// Records that leave the pipeline here.
    pub side: Vec<Output>,
    pub dead_letter: Option<DeadLetterReason>,
}

impl<T> Emit<T> {
    pub fn next(item: T) -> Emit<T> {
        Emit {
            next: vec![item],
            side: Vec::new(),
            dead_letter: None,
        }
    }

    /// Nothing goes on; `side` (a status saying why) leaves here.
    pub fn end(side: Vec<Output>) -> Emit<T> {
        Emit {
            next: Vec::new(),
            side,
            dead_letter: None,
        }
    }

    pub fn with_side(mut self, output: Output) -> Emit<T> {
        self.side.push(output);
        self
    }
}

/// One business rule: an input in, [`Emit`] out. The input's record (where it came from)
/// is the one read at the edge of the processor, whichever stage of a chain this is.
pub trait Stage: Send + Sync + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;

    /// The stage's name: status events' `stage`, metric and dead-letter labels.
    fn name(&self) -> &'static str;

    fn process(
        &self,
        input: Self::In,
        record: &RecordMeta,
    ) -> impl Future<Output = Result<Emit<Self::Out>, ProcessError>> + Send;

    /// The record `out` becomes when this stage is the last one (its own output topic).
    fn output(&self, out: Self::Out, record: &RecordMeta) -> Output;

    /// Input partitions assigned (before any of their records), e.g. to load owned state.
    fn assigned(&self, _partitions: &[(String, i32)]) {}

    /// Input partitions taken away (after their in-flight records finished).
    fn revoked(&self, _partitions: &[(String, i32)]) {}
}

/// `first`, then `second` on each of its records.
pub struct Then<A, B> {
    pub first: A,
    pub second: B,
}

impl<A, B> Then<A, B> {
    pub fn new(first: A, second: B) -> Self {
        Then { first, second }
    }
}

/// A rejection of stage `stage` as a dead letter beside the side outputs it carried.
fn rejected<T>(e: ProcessError, stage: &'static str) -> Result<Emit<T>, ProcessError> {
    match e {
        ProcessError::Reject {
            class,
            reason,
            outputs,
            stage: inner,
        } => Ok(Emit {
            next: Vec::new(),
            side: outputs,
            dead_letter: Some(DeadLetterReason {
                stage: inner.unwrap_or(stage),
                class,
                reason,
            }),
        }),
        transient => Err(transient),
    }
}

impl<A, B> Stage for Then<A, B>
where
    A: Stage,
    B: Stage<In = A::Out>,
{
    type In = A::In;
    type Out = B::Out;

    fn name(&self) -> &'static str {
        self.first.name()
    }

    async fn process(
        &self,
        input: Self::In,
        record: &RecordMeta,
    ) -> Result<Emit<Self::Out>, ProcessError> {
        let first = match self.first.process(input, record).await {
            Ok(emit) => emit,
            Err(e) => return rejected(e, self.first.name()),
        };
        let mut out = Emit {
            next: Vec::new(),
            side: first.side,
            dead_letter: first.dead_letter,
        };
        for item in first.next {
            let emit = match self.second.process(item, record).await {
                Ok(emit) => emit,
                Err(e) => rejected(e, self.second.name())?,
            };
            out.next.extend(emit.next);
            out.side.extend(emit.side);
            if out.dead_letter.is_none() {
                out.dead_letter = emit.dead_letter;
            }
        }
        Ok(out)
    }

    fn output(&self, out: Self::Out, record: &RecordMeta) -> Output {
        self.second.output(out, record)
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        self.first.assigned(partitions);
        self.second.assigned(partitions);
    }

    fn revoked(&self, partitions: &[(String, i32)]) {
        self.first.revoked(partitions);
        self.second.revoked(partitions);
    }
}

/// Chains stages left to right: `chain!(a, b, c)` is `Then(a, Then(b, c))`.
#[macro_export]
macro_rules! chain {
    ($only:expr $(,)?) => { $only };
    ($first:expr, $($rest:expr),+ $(,)?) => {
        $crate::stage::Then::new($first, $crate::chain!($($rest),+))
    };
}

/// Headers that describe the request itself and travel with it to the next stage's topic
/// (a replay's run id must reach delivery, so that the ledger decides what is resent).
pub const CARRIED_HEADERS: [&str; 1] = [crate::headers::REPLAY_RUN];

fn carried_headers(record: &RecordMeta) -> Vec<(String, Vec<u8>)> {
    record
        .headers
        .iter()
        .filter(|(k, _)| CARRIED_HEADERS.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// Runs a stage (or a chain of them) as a processor: the input decoded from the input topic,
/// the last stage's records written to its output, side outputs as they are.
pub struct StageProcessor<S>(pub S);

impl<S> Processor for StageProcessor<S>
where
    S: Stage,
    S::In: Decode,
{
    type Input = S::In;

    async fn process(
        &self,
        input: Self::Input,
        record: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        let emit = match self.0.process(input, record).await {
            Ok(emit) => emit,
            Err(e) => rejected(e, self.0.name())?,
        };
        let mut outputs = emit.side;
        let carried = carried_headers(record);
        outputs.extend(emit.next.into_iter().map(|o| {
            let mut out = self.0.output(o, record);
            out.headers.extend(carried.iter().cloned());
            out
        }));
        match emit.dead_letter {
            None => Ok(outputs),
            Some(dl) => Err(ProcessError::Reject {
                class: dl.class,
                reason: dl.reason,
                outputs,
                stage: Some(dl.stage),
            }),
        }
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        self.0.assigned(partitions);
    }

    fn revoked(&self, partitions: &[(String, i32)]) {
        self.0.revoked(partitions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Double;
    struct Halve;

    impl Stage for Double {
        type In = i64;
        type Out = i64;
        fn name(&self) -> &'static str {
            "double"
        }
        async fn process(&self, n: i64, _: &RecordMeta) -> Result<Emit<i64>, ProcessError> {
            Ok(Emit {
                next: vec![n * 2, n * 2 + 1],
                side: Vec::new(),
                dead_letter: None,
            })
        }
        fn output(&self, n: i64, _: &RecordMeta) -> Output {
            Output::bytes("doubled", None, n.to_string().into_bytes())
        }
    }

    impl Stage for Halve {
        type In = i64;
        type Out = i64;
        fn name(&self) -> &'static str {
            "halve"
        }
        async fn process(&self, n: i64, _: &RecordMeta) -> Result<Emit<i64>, ProcessError> {
            if n % 2 == 1 {
                return Err(ProcessError::reject(ErrorClass::Validation, "odd"));
            }
            Ok(Emit::next(n / 2))
        }
        fn output(&self, n: i64, _: &RecordMeta) -> Output {
            Output::bytes("halved", None, n.to_string().into_bytes())
        }
    }

    #[tokio::test]
    async fn a_chain_passes_records_on_and_keeps_the_rejecting_stage() {
        let chain = chain!(Double, Halve);
        let record = RecordMeta::for_test("in", 0, 7, "k");
        let emit = chain.process(5, &record).await.expect("no transient error");
        assert_eq!(emit.next, vec![5], "10 halves to 5, 11 is rejected");
        let dl = emit.dead_letter.expect("11 was odd");
        assert_eq!(dl.stage, "halve");
        assert_eq!(chain.output(5, &record).topic, "halved");
    }
}
