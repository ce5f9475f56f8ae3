//! Faults a cluster really has, each in a short version that still asserts nothing lost and
//! nothing sent twice (`make chaos` runs the long versions): the schema registry failing,
//! the broker killed, processors killed and paused.

mod registry;
