//! APNs provider API: `POST /3/device/{token}` with token-based (ES256 JWT) authentication.
//!
//! Checks follow Apple's documented order of concerns (credentials, then headers, then the
//! device token and payload) and answer with Apple's reasons and status codes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{bearer, header_str, verify_jwt};
use crate::faults;
use crate::record::{Accepted, Provider};
use crate::state::{AppState, now_ms, now_secs, random_hex};

/// Apple refuses provider tokens older than one hour.
const TOKEN_MAX_AGE_SECS: u64 = 3600;
const MAX_PAYLOAD: usize = 4096;
const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
];
const RECORDED_HEADERS: &[&str] = &[
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
    "apns-id",
];

#[derive(Deserialize)]
struct Claims {
    iss: String,
    iat: u64,
}

type Rejection = (StatusCode, &'static str);

pub(crate) async fn send(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.records.count_request(Provider::Apns);
    // Apple echoes the caller's apns-id, or makes one up when there is none.
    let apns_id = header_str(&headers, "apns-id")
        .map(str::to_string)
        .unwrap_or_else(new_uuid);
    if let Some(resp) = faults::apply(&state, Provider::Apns, &token, error_body).await {
        return with_apns_id(resp, &apns_id);
    }
    let resp = match check(&state, &token, &headers, &body) {
        Err((status, reason)) => reject(status, reason),
        Ok(payload) => {
            let mut recorded: BTreeMap<String, String> = RECORDED_HEADERS
                .iter()
                .filter_map(|name| Some((name.to_string(), header_str(&headers, name)?.into())))
                .collect();
            recorded.insert("http-version".into(), format!("{version:?}"));
            let accepted_for = token.clone();
            state.records.record(Accepted {
                provider: Provider::Apns,
                path: format!("/3/device/{token}"),
                recipient: token,
                headers: recorded,
                body: payload,
                provider_id: apns_id.clone(),
            });
            faults::hold_after_accept(&state, Provider::Apns, &accepted_for).await;
            StatusCode::OK.into_response()
        }
    };
    with_apns_id(resp, &apns_id)
}

fn check(
    state: &AppState,
    token: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, Rejection> {
    check_provider_token(state, headers)?;
    if header_str(headers, "apns-id").is_some_and(|id| !is_uuid(id)) {
        return Err((StatusCode::BAD_REQUEST, "BadMessageId"));
    }
    let topic =
        header_str(headers, "apns-topic").ok_or((StatusCode::BAD_REQUEST, "MissingTopic"))?;
    if state
        .config
        .apns
        .topic
        .as_deref()
        .is_some_and(|t| t != topic)
    {
        return Err((StatusCode::BAD_REQUEST, "TopicDisallowed"));
    }
    let push_type = header_str(headers, "apns-push-type").unwrap_or("");
    if !PUSH_TYPES.contains(&push_type) {
        return Err((StatusCode::BAD_REQUEST, "InvalidPushType"));
    }
    if header_str(headers, "apns-priority").is_some_and(|p| !matches!(p, "1" | "5" | "10")) {
        return Err((StatusCode::BAD_REQUEST, "BadPriority"));
    }
    if header_str(headers, "apns-expiration").is_some_and(|e| e.parse::<u64>().is_err()) {
        return Err((StatusCode::BAD_REQUEST, "BadExpirationDate"));
    }
    if header_str(headers, "apns-collapse-id").is_some_and(|c| c.len() > 64) {
        return Err((StatusCode::BAD_REQUEST, "BadCollapseId"));
    }
    // Device tokens are hex; 32 bytes today, but Apple says they may grow.
    if !(64..=200).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err((StatusCode::BAD_REQUEST, "BadDeviceToken"));
    }
    if body.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "PayloadEmpty"));
    }
    if body.len() > MAX_PAYLOAD {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"));
    }
    let payload: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, "BadPayload"))?;
    if !payload.get("aps").is_some_and(|a| a.is_object()) {
        return Err((StatusCode::BAD_REQUEST, "BadPayload"));
    }
    Ok(payload)
}

fn check_provider_token(state: &AppState, headers: &HeaderMap) -> Result<(), Rejection> {
    const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
    let jwt = bearer(headers).ok_or((FORBIDDEN, "MissingProviderToken"))?;
    let account = &state.config.apns;
    let known = crate::state::lock(&state.apns_verified).get(jwt).copied();
    let iat = match known {
        Some(iat) => iat,
        None => {
            let claims: Claims = verify_jwt(
                jwt,
                &state.apns_key,
                Algorithm::ES256,
                Some(&account.key_id),
            )
            .map_err(|_| (FORBIDDEN, "InvalidProviderToken"))?;
            if claims.iss != account.team_id {
                return Err((FORBIDDEN, "InvalidProviderToken"));
            }
            let mut verified = crate::state::lock(&state.apns_verified);
            // Tokens rotate hourly: a handful at most in a healthy run.
            if verified.len() >= 256 {
                verified.clear();
            }
            verified.insert(jwt.to_string(), claims.iat);
            claims.iat
        }
    };
    let now = now_secs();
    if iat > now + 60 {
        return Err((FORBIDDEN, "InvalidProviderToken"));
    }
    if now.saturating_sub(iat) > TOKEN_MAX_AGE_SECS {
        return Err((FORBIDDEN, "ExpiredProviderToken"));
    }
    Ok(())
}

fn reject(status: StatusCode, reason: &str) -> Response {
    let body = if status == StatusCode::GONE {
        json!({ "reason": reason, "timestamp": now_ms() })
    } else {
        json!({ "reason": reason })
    };
    (status, Json(body)).into_response()
}

/// Apple's body for a status, used when a fault gives a status without a body.
fn error_body(status: StatusCode) -> serde_json::Value {
    let reason = match status.as_u16() {
        400 => "BadDeviceToken",
        403 => "InvalidProviderToken",
        404 => "BadPath",
        405 => "MethodNotAllowed",
        410 => "Unregistered",
        413 => "PayloadTooLarge",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        _ => "ServiceUnavailable",
    };
    if status == StatusCode::GONE {
        json!({ "reason": reason, "timestamp": now_ms() })
    } else {
        json!({ "reason": reason })
    }
}

fn with_apns_id(mut resp: Response, apns_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(apns_id) {
        resp.headers_mut().insert("apns-id", value);
    }
    resp
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn new_uuid() -> String {
    let hex = random_hex(16).to_uppercase();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        assert!(is_uuid(&new_uuid()));
        assert!(is_uuid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!is_uuid("123e4567e89b12d3a456426614174000"));
        assert!(!is_uuid("123e4567-e89b-12d3-a456-42661417400g"));
    }
}
