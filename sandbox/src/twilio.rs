//! Twilio Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form body,
//! HTTP basic auth with the account SID and auth token.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::basic;
use crate::faults;
use crate::record::{Accepted, Provider};
use crate::state::{AppState, random_hex};

/// Twilio refuses bodies longer than this many characters (after concatenation).
const MAX_BODY_CHARS: usize = 1600;

pub(crate) async fn send(
    State(state): State<Arc<AppState>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    state.records.count_request(Provider::Twilio);
    let to = form.get("To").cloned().unwrap_or_default();
    if let Some(resp) = faults::apply(&state, Provider::Twilio, &to, error_body).await {
        return resp;
    }
    let account = &state.config.twilio;
    let authorised = basic(&headers).is_some_and(|(user, password)| {
        user == account.account_sid && password == account.auth_token && user == account_sid
    });
    if !authorised {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate".into());
    }
    if to.is_empty() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.".into(),
        );
    }
    if !is_e164(&to) {
        let message = format!("The 'To' number {to} is not a valid phone number.");
        return twilio_error(StatusCode::BAD_REQUEST, 21211, message);
    }
    let from = form.get("From").filter(|f| !f.is_empty());
    let service = form.get("MessagingServiceSid").filter(|s| !s.is_empty());
    if from.is_none() && service.is_none() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.".into(),
        );
    }
    let body = form.get("Body").cloned().unwrap_or_default();
    if body.is_empty() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21602,
            "Message body is required.".into(),
        );
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.".into(),
        );
    }
    let sid = format!("SM{}", random_hex(16));
    let accepted_for = to.clone();
    state.records.record(Accepted {
        provider: Provider::Twilio,
        path: format!("/2010-04-01/Accounts/{account_sid}/Messages.json"),
        recipient: to.clone(),
        headers: BTreeMap::new(),
        body: json!(form),
        provider_id: sid.clone(),
    });
    faults::hold_after_accept(&state, Provider::Twilio, &accepted_for).await;
    let resource = json!({
        "sid": sid,
        "account_sid": account_sid,
        "to": to,
        "from": from,
        "messaging_service_sid": service,
        "body": body,
        "status": if service.is_some() { "accepted" } else { "queued" },
        "direction": "outbound-api",
        "num_segments": "1",
        "api_version": "2010-04-01",
        "date_created": httpdate::fmt_http_date(std::time::SystemTime::now()),
        "error_code": null,
        "error_message": null,
        "price": null,
        "uri": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"),
    });
    (StatusCode::CREATED, Json(resource)).into_response()
}

/// `+` and 8 to 15 digits: what Twilio accepts as an E.164 number.
fn is_e164(number: &str) -> bool {
    number
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

fn twilio_error(status: StatusCode, code: u32, message: String) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

fn error_body(status: StatusCode) -> Value {
    let (code, message) = match status.as_u16() {
        400 => (21211, "The 'To' number is not a valid phone number."),
        401 => (20003, "Authenticate"),
        404 => (20404, "The requested resource was not found"),
        429 => (20429, "Too Many Requests"),
        500 => (20500, "Internal Server Error"),
        _ => (20503, "Service unavailable"),
    };
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    })
}
