//! The ops tests run the whole pipeline as the chart deploys it by default.

pub use crate::pipeline::Pipeline;
