//! Device tokens providers reported invalid (`notify.token-feedback.v1`, keyed by user id). Held in a local table with one row per user and token, and
//! synced like the profile table, so the request after a TOKEN_INVALID skips the device.

use notify_runtime::records::TokenFeedback;
use notify_runtime::runner::RuntimeError;
use notify_runtime::{Config, Table};

/// The table of reported tokens of the users the assigned intake partitions own.
pub async fn table(
    config: &Config,
    topic: &str,
    input_partitions: usize,
) -> Result<Table<TokenFeedback>, RuntimeError> {
    Table::owned(config, topic, input_partitions, |_, f: &TokenFeedback| {
        row(&f.user_id, &f.token)
    })
    .await
}

/// True when `token` of `user_id` was reported invalid.
pub fn is_invalid(table: &Table<TokenFeedback>, user_id: &str, token: &str) -> bool {
    table.get(&row(user_id, token)).is_some()
}

fn row(user_id: &str, token: &str) -> String {
    format!("{user_id}\u{1f}{token}")
}
