//! SendGrid v3 `POST /v3/mail/send`: bearer API key, JSON body, 202 with `X-Message-Id`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::bearer;
use crate::faults;
use crate::record::{Accepted, Provider};
use crate::state::{AppState, random_hex};

pub(crate) async fn send(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.records.count_request(Provider::Sendgrid);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let to = parsed
        .as_ref()
        .and_then(|v| v.pointer("/personalizations/0/to/0/email"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(resp) = faults::apply(&state, Provider::Sendgrid, &to, error_body).await {
        return resp;
    }
    if bearer(&headers) != Some(state.config.sendgrid.api_key.as_str()) {
        let message = "The provided authorization grant is invalid, expired, or revoked";
        return sendgrid_error(StatusCode::UNAUTHORIZED, message, None);
    }
    let Some(mail) = parsed else {
        return sendgrid_error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            Some("body is not valid JSON"),
        );
    };
    if let Err((field, message)) = validate(&mail) {
        return sendgrid_error(StatusCode::BAD_REQUEST, message, Some(field));
    }
    let message_id = random_hex(11);
    let accepted_for = to.clone();
    state.records.record(Accepted {
        provider: Provider::Sendgrid,
        path: "/v3/mail/send".into(),
        recipient: to,
        headers: BTreeMap::new(),
        body: mail,
        provider_id: message_id.clone(),
    });
    faults::hold_after_accept(&state, Provider::Sendgrid, &accepted_for).await;
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(value) = HeaderValue::from_str(&message_id) {
        resp.headers_mut().insert("x-message-id", value);
    }
    resp
}

fn validate(mail: &Value) -> Result<(), (&'static str, &'static str)> {
    let personalizations = mail
        .get("personalizations")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or((
            "personalizations",
            "The personalizations field is required and must have at least one personalization.",
        ))?;
    let top_subject = mail.get("subject").and_then(Value::as_str).is_some();
    for p in personalizations {
        let to = p
            .get("to")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty());
        let to = to.ok_or((
            "personalizations.0.to",
            "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
        ))?;
        if !to
            .iter()
            .all(|t| t.get("email").and_then(Value::as_str).is_some_and(is_email))
        {
            return Err(("personalizations.0.to", "Does not contain a valid address."));
        }
        if !top_subject && p.get("subject").and_then(Value::as_str).is_none() {
            return Err((
                "subject",
                "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",
            ));
        }
    }
    let from_ok = mail
        .pointer("/from/email")
        .and_then(Value::as_str)
        .is_some_and(is_email);
    if !from_ok {
        return Err((
            "from.email",
            "The from email does not contain a valid address.",
        ));
    }
    let content_ok = mail
        .get("content")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            !c.is_empty()
                && c.iter().all(|part| {
                    part.get("type").and_then(Value::as_str).is_some()
                        && part
                            .get("value")
                            .and_then(Value::as_str)
                            .is_some_and(|v| !v.is_empty())
                })
        });
    if !content_ok {
        return Err((
            "content",
            "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block.",
        ));
    }
    Ok(())
}

fn is_email(s: &str) -> bool {
    s.split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
}

fn sendgrid_error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let body = json!({ "errors": [{ "message": message, "field": field, "help": null }] });
    (status, Json(body)).into_response()
}

fn error_body(status: StatusCode) -> Value {
    let message = match status.as_u16() {
        400 => "Bad Request",
        401 => "The provided authorization grant is invalid, expired, or revoked",
        403 => "access forbidden",
        413 => "Payload Too Large",
        429 => "too many requests",
        _ => "service unavailable",
    };
    json!({ "errors": [{ "message": message, "field": null, "help": null }] })
}
