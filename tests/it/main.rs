//! One integration binary against the real stack (`make stack-up`). Each module is an area;
//! each test makes its own topics, groups and keyspace through `notify_tests::TestEnv`.

mod delivery;
mod foundation;
mod table;
mod tools;
mod stages_filter;
mod retry;
