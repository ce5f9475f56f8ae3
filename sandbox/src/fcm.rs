//! FCM HTTP v1: the OAuth2 token URI (JWT-bearer grant, RS256) and `messages:send`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, http::Version};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{JwtProblem, bearer, verify_jwt};
use crate::faults;
use crate::record::{Accepted, Provider};
use crate::state::{AppState, lock, now_secs, random_hex};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
];
const TOKEN_LIFETIME_SECS: u64 = 3600;

#[derive(Deserialize)]
pub(crate) struct TokenRequest {
    grant_type: Option<String>,
    assertion: Option<String>,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    aud: String,
    #[serde(default)]
    scope: String,
    iat: u64,
    exp: u64,
}

pub(crate) async fn token(
    State(state): State<Arc<AppState>>,
    Form(req): Form<TokenRequest>,
) -> Response {
    state.records.count_token_request();
    if req.grant_type.as_deref() != Some(GRANT_TYPE) {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = req.assertion else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let claims: AssertionClaims =
        match verify_jwt(&assertion, &state.fcm_key, Algorithm::RS256, None) {
            Ok(claims) => claims,
            Err(JwtProblem::BadSignature) => {
                return oauth_error("invalid_grant", "Invalid JWT Signature.");
            }
            Err(_) => return oauth_error("invalid_grant", "Invalid JWT."),
        };
    let now = now_secs();
    if claims.iss != state.config.fcm.client_email {
        return oauth_error("invalid_grant", "Invalid JWT: unknown issuer.");
    }
    if claims.aud != state.token_uri() {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: audience is not the token URI.",
        );
    }
    if !claims.scope.split(' ').any(|s| SCOPES.contains(&s)) {
        return oauth_error(
            "invalid_scope",
            "No valid scope for Firebase Cloud Messaging.",
        );
    }
    if claims.exp <= now || claims.iat > now + 60 || claims.exp.saturating_sub(claims.iat) > 3600 {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    let access_token = format!("ya29.sandbox.{}", random_hex(24));
    lock(&state.fcm_tokens).insert(access_token.clone(), now + TOKEN_LIFETIME_SECS);
    Json(json!({
        "access_token": access_token,
        "expires_in": TOKEN_LIFETIME_SECS,
        "token_type": "Bearer",
    }))
    .into_response()
}

fn oauth_error(error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

pub(crate) async fn send(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.records.count_request(Provider::Fcm);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let token = parsed
        .as_ref()
        .and_then(|v| v.pointer("/message/token"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(resp) = faults::apply(&state, Provider::Fcm, &token, error_body).await {
        return resp;
    }
    let authorised = bearer(&headers).is_some_and(|t| {
        lock(&state.fcm_tokens)
            .get(t)
            .is_some_and(|exp| *exp > now_secs())
    });
    if !authorised {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            None,
        );
    }
    if project != state.config.fcm.project_id {
        return google_error(
            StatusCode::FORBIDDEN,
            "Permission 'cloudmessaging.messages.create' denied on resource.",
            None,
        );
    }
    let Some(message) = parsed.as_ref().and_then(|v| v.get("message")) else {
        return invalid_argument("message", "Request contains an invalid argument.");
    };
    if let Err((field, description)) = validate(message) {
        return invalid_argument(field, description);
    }
    let name = format!("projects/{project}/messages/{}", random_hex(8));
    let mut recorded = BTreeMap::new();
    recorded.insert("http-version".to_string(), format!("{version:?}"));
    let accepted_for = token.clone();
    state.records.record(Accepted {
        provider: Provider::Fcm,
        path: format!("/v1/projects/{project}/messages:send"),
        recipient: token,
        headers: recorded,
        body: parsed.unwrap_or(Value::Null),
        provider_id: name.clone(),
    });
    faults::hold_after_accept(&state, Provider::Fcm, &accepted_for).await;
    Json(json!({ "name": name })).into_response()
}

fn validate(message: &Value) -> Result<(), (&'static str, &'static str)> {
    let token = message.get("token").and_then(Value::as_str).unwrap_or("");
    if token.is_empty() {
        return Err(("message.token", "Invalid registration token"));
    }
    if let Some(data) = message.get("data") {
        let all_strings = data
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string));
        if !all_strings {
            return Err(("message.data", "Invalid value: data values must be strings"));
        }
    }
    if let Some(n) = message.get("notification") {
        let ok = ["title", "body"]
            .iter()
            .all(|k| n.get(k).is_none_or(Value::is_string));
        if !ok {
            return Err(("message.notification", "Invalid notification"));
        }
    }
    if let Some(android) = message.get("android") {
        let priority = android.get("priority").and_then(Value::as_str);
        if priority.is_some_and(|p| p != "NORMAL" && p != "HIGH") {
            return Err(("message.android.priority", "Invalid priority"));
        }
        let ttl = android.get("ttl").and_then(Value::as_str);
        if ttl.is_some_and(|t| !is_duration(t)) {
            return Err(("message.android.ttl", "Invalid duration"));
        }
    }
    Ok(())
}

/// Protobuf JSON durations: seconds with up to nine fractional digits and an `s` suffix.
fn is_duration(s: &str) -> bool {
    let Some(num) = s.strip_suffix('s') else {
        return false;
    };
    let (secs, frac) = num.split_once('.').unwrap_or((num, ""));
    !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 9
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn invalid_argument(field: &str, description: &str) -> Response {
    let violation = json!({
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{ "field": field, "description": description }],
    });
    google_error(
        StatusCode::BAD_REQUEST,
        "Request contains an invalid argument.",
        Some(violation),
    )
}

fn google_error(status: StatusCode, message: &str, extra: Option<Value>) -> Response {
    let mut body = error_body(status);
    body["error"]["message"] = json!(message);
    if let (Some(extra), Some(details)) = (extra, body["error"]["details"].as_array_mut()) {
        details.push(extra);
    }
    (status, Json(body)).into_response()
}

/// Google's error envelope with the FCM error code that goes with a status.
fn error_body(status: StatusCode) -> Value {
    let (grpc, fcm) = match status.as_u16() {
        400 => ("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        401 => ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
        403 => ("PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
        404 => ("NOT_FOUND", "UNREGISTERED"),
        429 => ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
        500 => ("INTERNAL", "INTERNAL"),
        _ => ("UNAVAILABLE", "UNAVAILABLE"),
    };
    json!({ "error": {
        "code": status.as_u16(),
        "message": status.canonical_reason().unwrap_or("error"),
        "status": grpc,
        "details": [{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": fcm,
        }],
    }})
}
