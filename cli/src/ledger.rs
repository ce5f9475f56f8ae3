//! The delivery ledger (`delivery_messages`) as the operator tools read it: the rows of one
//! event, and what a replay of a record would do with them.

use notify_runtime::Config;
use notify_runtime::records::mask;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use serde::Serialize;

/// One message's row. The recipient is masked: the tools print it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LedgerRow {
    pub user_id: String,
    pub channel: String,
    pub recipient: String,
    pub state: String,
    pub attempt: Option<i32>,
    pub provider_id: Option<String>,
    pub reason: Option<String>,
    pub updated_at_ms: Option<i64>,
    /// The full contact point, to match a channel message; never printed.
    #[serde(skip)]
    pub full_recipient: String,
}

pub struct Ledger {
    session: Session,
    select: PreparedStatement,
}

impl Ledger {
    pub async fn connect(config: &Config) -> anyhow::Result<Ledger> {
        let session = notify_runtime::cql::connect(&config.cql).await?;
        let ks = &config.cql.keyspace;
        anyhow::ensure!(
            notify_runtime::config::is_cql_identifier(ks),
            "invalid keyspace name {ks:?}"
        );
        let select = session
            .prepare(format!(
                "SELECT user_id, channel, recipient, state, attempt, provider_id, reason, updated_at \
                 FROM {ks}.delivery_messages WHERE event_id = ?"
            ))
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the delivery ledger {ks}.delivery_messages: {e}"))?;
        Ok(Ledger { session, select })
    }

    /// Every row of `event_id`, all users.
    pub async fn rows(&self, event_id: &str) -> anyhow::Result<Vec<LedgerRow>> {
        let result = self
            .session
            .execute_unpaged(&self.select, (event_id,))
            .await
            .map_err(|e| anyhow::anyhow!("delivery ledger query failed: {e}"))?;
        let rows = result.into_rows_result()?;
        type Row = (
            String,
            String,
            String,
            Option<String>,
            Option<i32>,
            Option<String>,
            Option<String>,
            Option<CqlTimestamp>,
        );
        let mut out = Vec::new();
        for row in rows.rows::<Row>()? {
            let (user_id, channel, recipient, state, attempt, provider_id, reason, at) = row?;
            out.push(LedgerRow {
                user_id,
                channel,
                recipient: mask(&recipient),
                state: state.unwrap_or_default(),
                attempt,
                provider_id,
                reason,
                updated_at_ms: at.map(|t| t.0),
                full_recipient: recipient,
            });
        }
        Ok(out)
    }
}

/// What the delivery ledger does with a replayed message whose row is in `state` (None: no
/// row). The key is the summary line of `replay --dry-run`.
pub fn replay_decision(state: Option<&str>, force: bool) -> &'static str {
    if force {
        return "send: forced (new event id)";
    }
    match state {
        None => "send: no ledger row",
        Some("failed") => "send: failed before",
        Some("retrying") => "send: was retrying",
        Some("sent") => "skip: already sent",
        Some("token_invalid") => "skip: token invalid",
        Some("in_doubt") => "skip: in doubt (use --force to resend)",
        Some("claimed") => "held: claimed by a sender now",
        Some(_) => "send: unknown ledger state",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_skips_what_was_delivered_and_sends_the_rest() {
        assert!(replay_decision(Some("sent"), false).starts_with("skip"));
        assert!(replay_decision(Some("token_invalid"), false).starts_with("skip"));
        assert!(replay_decision(Some("in_doubt"), false).starts_with("skip"));
        assert!(replay_decision(Some("failed"), false).starts_with("send"));
        assert!(replay_decision(Some("retrying"), false).starts_with("send"));
        assert!(replay_decision(None, false).starts_with("send"));
        assert!(replay_decision(Some("sent"), true).starts_with("send"));
    }
}
