//! One integration binary against the real stack (`make stack-up`). Each module is an area;
//! each test makes its own topics, groups and keyspace through `notify_tests::TestEnv`.

mod chain;
mod dedup;
mod delivery;
mod faults;
mod foundation;
mod observe;
mod ops;
mod pipeline;
mod retry;
mod secure;
mod stages_filter;
mod stages_render;
mod table;
mod tools;
