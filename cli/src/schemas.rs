//! `notify schemas register`: puts each topic's value schema under `<topic>-value`
//! (topic-name strategy) with a compatibility rule, so an incompatible change fails clearly.

use notify_runtime::Config;
use notify_runtime::records::ALL_SCHEMAS;
use serde_json::json;

use crate::topics::TopicsFile;

/// What happened to one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub record: String,
    pub id: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "{subject}: the schema of {record} is not {compatibility}-compatible with the registered one: {detail}"
    )]
    Incompatible {
        subject: String,
        record: String,
        compatibility: String,
        detail: String,
    },
    #[error("{subject}: registry answered {status}: {body}")]
    Registry {
        subject: String,
        status: u16,
        body: String,
    },
    #[error("schema registry at {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("topic {topic} names unknown record {record}")]
    UnknownRecord { topic: String, record: String },
}

/// Registers the value schema of every topic in `file` that names one.
pub async fn register(
    config: &Config,
    file: &TopicsFile,
    compatibility: &str,
) -> Result<Vec<Registered>, RegisterError> {
    let unusable = |reason: String| RegisterError::Unreachable {
        url: config.registry.url.clone(),
        reason,
    };
    let client = notify_runtime::codec::http_client(&config.registry)
        .map_err(|e| unusable(e.to_string()))?
        .build()
        .map_err(|e| unusable(e.to_string()))?;
    let base = config.registry.url.trim_end_matches('/');
    let mut out = Vec::new();
    for topic in &file.topics {
        let Some(record) = &topic.value else { continue };
        let schema = ALL_SCHEMAS
            .iter()
            .find(|(name, _)| name == record)
            .map(|(_, text)| *text)
            .ok_or_else(|| RegisterError::UnknownRecord {
                topic: topic.name.clone(),
                record: record.clone(),
            })?;
        let subject = format!("{}-value", topic.name);
        let request = |builder: reqwest::RequestBuilder| {
            let builder = builder.header("content-type", "application/vnd.schemaregistry.v1+json");
            match (&config.registry.username, &config.registry.password) {
                (Some(u), p) => builder.basic_auth(u, p.as_ref()),
                _ => builder,
            }
        };
        let unreachable = |e: reqwest::Error| RegisterError::Unreachable {
            url: base.to_string(),
            reason: e.to_string(),
        };

        let response = request(client.put(format!("{base}/config/{subject}")))
            .json(&json!({ "compatibility": compatibility }))
            .send()
            .await
            .map_err(unreachable)?;
        check(&subject, response).await?;

        // Ask first: the registry tells an incompatible schema apart clearly this way.
        let compat = request(client.post(format!(
            "{base}/compatibility/subjects/{subject}/versions/latest"
        )))
        .json(&json!({ "schema": schema, "schemaType": "AVRO" }))
        .send()
        .await
        .map_err(unreachable)?;
        if compat.status().is_success() {
            let body: serde_json::Value = compat.json().await.unwrap_or_default();
            if body.get("is_compatible") == Some(&json!(false)) {
                return Err(RegisterError::Incompatible {
                    subject,
                    record: record.clone(),
                    compatibility: compatibility.to_string(),
                    detail: body
                        .get("messages")
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                });
            }
        }
        let response = request(client.post(format!("{base}/subjects/{subject}/versions")))
            .json(&json!({ "schema": schema, "schemaType": "AVRO" }))
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if status == 409 {
            return Err(RegisterError::Incompatible {
                subject,
                record: record.clone(),
                compatibility: compatibility.to_string(),
                detail: body,
            });
        }
        if !(200..300).contains(&status) {
            return Err(RegisterError::Registry {
                subject,
                status,
                body,
            });
        }
        let id = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_i64()))
            .unwrap_or(-1);
        out.push(Registered {
            subject,
            record: record.clone(),
            id,
        });
    }
    Ok(out)
}

async fn check(subject: &str, response: reqwest::Response) -> Result<(), RegisterError> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(RegisterError::Registry {
        subject: subject.to_string(),
        status,
        body,
    })
}
