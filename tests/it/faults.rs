//! Faults a cluster really has, each in a short version that still asserts nothing lost and
//! nothing sent twice (`make chaos` runs the long versions, NOTIFY_CHAOS_SCALE): the schema
//! registry failing, the broker killed, processors killed and paused. `chaos` is the harness
//! (the default deployment as processes, the load, the oracle's report).

mod broker;
mod chaos;
mod churn;
mod copies;
mod kill;
mod orphan;
mod outage;
mod pause;
mod poison;
mod registry;
