//! The CQL database (ScyllaDB in production, Cassandra locally): sessions and migrations.
//!
//! Migrations are the files of `schemas/cql/`, compiled in, applied in name order. Each
//! statement is idempotent (`IF NOT EXISTS`), and applied files are recorded in
//! `<keyspace>.schema_migrations`, so `notify db migrate` can run any number of times.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use crate::config::{CqlConfig, is_cql_identifier};

mod batch;
pub use batch::{BatchSettings, BatchWriter};

/// Every migration, in the order it is applied. `{keyspace}` is replaced by the configured one.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_migrations.cql",
        include_str!("../../../schemas/cql/0001_migrations.cql"),
    ),
    (
        "0002_dedup.cql",
        include_str!("../../../schemas/cql/0002_dedup.cql"),
    ),
    (
        "0003_ratelimit.cql",
        include_str!("../../../schemas/cql/0003_ratelimit.cql"),
    ),
    (
        "0004_delivery.cql",
        include_str!("../../../schemas/cql/0004_delivery.cql"),
    ),
    (
        "0005_dedup_claims.cql",
        include_str!("../../../schemas/cql/0005_dedup_claims.cql"),
    ),
    (
        "0006_delivery_final.cql",
        include_str!("../../../schemas/cql/0006_delivery_final.cql"),
    ),
    (
        "0007_delivery_messages.cql",
        include_str!("../../../schemas/cql/0007_delivery_messages.cql"),
    ),
    (
        "0008_dedup_accepted.cql",
        include_str!("../../../schemas/cql/0008_dedup_accepted.cql"),
    ),
    (
        "0009_partition_owners.cql",
        include_str!("../../../schemas/cql/0009_partition_owners.cql"),
    ),
    (
        "0010_partition_claims_time.cql",
        include_str!("../../../schemas/cql/0010_partition_claims_time.cql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum CqlError {
    #[error("cannot connect to the CQL database at {nodes}: {reason}")]
    Connect { nodes: String, reason: String },
    #[error("migration {name} failed: {reason}")]
    Migration { name: String, reason: String },
    #[error("invalid keyspace name {0:?}")]
    Keyspace(String),
    #[error("CQL TLS settings: {0}")]
    Tls(String),
    #[error("CQL query failed: {0}")]
    Query(String),
}

/// Opens a session (not bound to a keyspace: statements name it).
pub async fn connect(config: &CqlConfig) -> Result<Session, CqlError> {
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(Duration::from_secs(5));
    match (&config.username, &config.password) {
        (Some(user), Some(password)) => builder = builder.user(user, password),
        (None, None) => {}
        // Config validation refuses this too; a CqlConfig built in code must not silently
        // connect without authentication either.
        _ => {
            return Err(CqlError::Connect {
                nodes: config.nodes.join(","),
                reason: "cql.username and cql.password go together".into(),
            });
        }
    }
    if config.tls {
        builder = builder.tls_context(Some(tls_context(config)?));
    }
    builder.build().await.map_err(|e| CqlError::Connect {
        nodes: config.nodes.join(","),
        reason: e.to_string(),
    })
}

/// TLS that checks the server's certificate chain (against `ca_file`, else the system's roots):
/// `SslConnector`'s defaults, peer verification included.
fn tls_context(config: &CqlConfig) -> Result<openssl::ssl::SslConnectorBuilder, CqlError> {
    use openssl::ssl::{SslConnector, SslMethod};
    let mut builder =
        SslConnector::builder(SslMethod::tls()).map_err(|e| CqlError::Tls(e.to_string()))?;
    if let Some(path) = &config.ca_file {
        builder
            .set_ca_file(path)
            .map_err(|e| CqlError::Tls(format!("cql.ca_file {path}: {e}")))?;
    }
    Ok(builder)
}

/// What `migrate` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub keyspace_created: bool,
    pub applied: Vec<String>,
    pub already_applied: Vec<String>,
}

/// Creates the keyspace if missing and applies the migrations not yet recorded.
pub async fn migrate(session: &Session, config: &CqlConfig) -> Result<MigrationReport, CqlError> {
    let ks = &config.keyspace;
    if !is_cql_identifier(ks) {
        return Err(CqlError::Keyspace(ks.clone()));
    }
    let mut report = MigrationReport::default();
    let existing = session
        .query_unpaged(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (ks.as_str(),),
        )
        .await
        .map_err(|e| CqlError::Query(e.to_string()))?
        .into_rows_result()
        .map(|r| r.rows_num())
        .unwrap_or(0);
    if existing == 0 {
        let create = format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            config.replication_factor
        );
        session
            .query_unpaged(create, ())
            .await
            .map_err(|e| CqlError::Query(e.to_string()))?;
        report.keyspace_created = true;
    }
    for (name, text) in MIGRATIONS {
        if applied(session, ks, name).await? {
            report.already_applied.push(name.to_string());
            continue;
        }
        for statement in statements(text, ks) {
            session
                .query_unpaged(statement, ())
                .await
                .map_err(|e| CqlError::Migration {
                    name: name.to_string(),
                    reason: e.to_string(),
                })?;
        }
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.schema_migrations (name, applied_at) VALUES (?, toTimestamp(now()))"),
                (*name,),
            )
            .await
            .map_err(|e| CqlError::Migration { name: name.to_string(), reason: e.to_string() })?;
        report.applied.push(name.to_string());
    }
    Ok(report)
}

async fn applied(session: &Session, ks: &str, name: &str) -> Result<bool, CqlError> {
    // The bookkeeping table itself comes from the first migration.
    let table = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'schema_migrations'",
            (ks,),
        )
        .await
        .map_err(|e| CqlError::Query(e.to_string()))?
        .into_rows_result()
        .map(|r| r.rows_num())
        .unwrap_or(0);
    if table == 0 {
        return Ok(false);
    }
    let rows = session
        .query_unpaged(
            format!("SELECT name FROM {ks}.schema_migrations WHERE name = ?"),
            (name,),
        )
        .await
        .map_err(|e| CqlError::Query(e.to_string()))?
        .into_rows_result()
        .map(|r| r.rows_num())
        .unwrap_or(0);
    Ok(rows > 0)
}

/// Splits a migration file into statements, dropping `--` comments.
fn statements(text: &str, keyspace: &str) -> Vec<String> {
    let without_comments: String = text
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.trim().replace("{keyspace}", keyspace))
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_substitutes_the_keyspace() {
        let s = statements(
            "-- c\nCREATE TABLE {keyspace}.a (x int PRIMARY KEY);\n\nCREATE TABLE {keyspace}.b (y int PRIMARY KEY); -- tail\n",
            "ks",
        );
        assert_eq!(
            s,
            vec![
                "CREATE TABLE ks.a (x int PRIMARY KEY)",
                "CREATE TABLE ks.b (y int PRIMARY KEY)"
            ]
        );
    }
}
