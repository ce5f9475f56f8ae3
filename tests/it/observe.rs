//! Observability (issue 17): every processor's metric families after a demo run and the
//! dashboard's queries against them, JSON logs of a run, `notify status` reading only what it
//! needs, and `notify lag`.

mod dashboard;
mod lag;
mod logs;
mod metrics;
mod status;
