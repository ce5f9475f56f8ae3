//! The sandbox's own HTTP surface, driven with a plain HTTP client and hand-made credentials.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use notify_sandbox::{SandboxHandle, TestCredentials};
use reqwest::StatusCode;
use serde_json::{Value, json};

const DEVICE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn creds() -> &'static TestCredentials {
    static CREDS: OnceLock<TestCredentials> = OnceLock::new();
    CREDS.get_or_init(|| TestCredentials::generate().expect("credentials"))
}

async fn sandbox() -> SandboxHandle {
    let listen = "127.0.0.1:0".parse().expect("addr");
    notify_sandbox::serve(creds().sandbox_config(listen))
        .await
        .expect("sandbox")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn apns_jwt(kid: &str, iat: u64) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_ec_pem(creds().apns_private_key_pem.as_bytes()).expect("key");
    let claims = json!({ "iss": creds().apns.team_id, "iat": iat });
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

async fn apns_post(
    sb: &SandboxHandle,
    jwt: Option<String>,
    topic: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let mut req = http
        .post(format!("{}/3/device/{DEVICE}", sb.base_url()))
        .header("apns-push-type", "alert")
        .header("apns-id", "123E4567-E89B-12D3-A456-426614174000")
        .json(&json!({ "aps": { "alert": "hi" } }));
    if let Some(jwt) = jwt {
        req = req.bearer_auth(jwt);
    }
    if let Some(topic) = topic {
        req = req.header("apns-topic", topic);
    }
    let resp = req.send().await.expect("response");
    let status = resp.status();
    let id = resp
        .headers()
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, id, body)
}

#[tokio::test]
async fn apns_checks_the_provider_token_and_headers() {
    let sb = sandbox().await;
    let kid = creds().apns.key_id.clone();
    let (status, id, _) = apns_post(&sb, Some(apns_jwt(&kid, now())), Some("com.example")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(id.as_deref(), Some("123E4567-E89B-12D3-A456-426614174000"));

    let cases = [
        (None, Some("com.example"), "MissingProviderToken"),
        (
            Some(apns_jwt(&kid, now() - 2 * 3600)),
            Some("com.example"),
            "ExpiredProviderToken",
        ),
        (
            Some(apns_jwt("OTHERKEYID", now())),
            Some("com.example"),
            "InvalidProviderToken",
        ),
        (Some(apns_jwt(&kid, now())), None, "MissingTopic"),
    ];
    for (jwt, topic, reason) in cases {
        let (status, id, body) = apns_post(&sb, jwt, topic).await;
        assert!(status.is_client_error(), "{reason}: {status}");
        assert_eq!(body["reason"], reason);
        assert!(id.is_some(), "apns-id is echoed on errors too");
    }
    assert_eq!(sb.messages(None).len(), 1);
}

#[tokio::test]
async fn fcm_refuses_bad_assertions_and_unknown_access_tokens() {
    let sb = sandbox().await;
    let http = reqwest::Client::new();
    let key = EncodingKey::from_rsa_pem(creds().fcm_private_key_pem.as_bytes()).expect("key");
    let assertion = |aud: &str| {
        let claims = json!({
            "iss": creds().fcm.client_email,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": aud, "iat": now(), "exp": now() + 3600,
        });
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign")
    };
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let wrong_aud = assertion("https://oauth2.googleapis.com/token");
    let resp = http
        .post(sb.fcm_token_uri())
        .form(&[("grant_type", grant), ("assertion", &wrong_aud)])
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");

    let good = assertion(&sb.fcm_token_uri());
    let resp = http
        .post(sb.fcm_token_uri())
        .form(&[("grant_type", grant), ("assertion", &good)])
        .send()
        .await
        .expect("token");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(sb.stats().fcm_token_requests, 2);

    let send_url = format!("{}/v1/projects/notify-sandbox/messages:send", sb.base_url());
    let msg = json!({ "message": { "token": "t1", "notification": { "body": "x" } } });
    let resp = http
        .post(&send_url)
        .bearer_auth("ya29.made-up")
        .json(&msg)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

    let token = http
        .post(sb.fcm_token_uri())
        .form(&[("grant_type", grant), ("assertion", &good)])
        .send()
        .await
        .expect("token")
        .json::<Value>()
        .await
        .expect("json")["access_token"]
        .as_str()
        .map(String::from)
        .expect("access token");
    let bad = json!({ "message": { "token": "t1", "data": { "n": 1 } } });
    let resp = http
        .post(&send_url)
        .bearer_auth(&token)
        .json(&bad)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    let resp = http
        .post(&send_url)
        .bearer_auth(&token)
        .json(&msg)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn faults_records_and_stop_over_http() {
    let sb = sandbox().await;
    let base = sb.base_url();
    let http = reqwest::Client::new();
    let fault =
        json!({ "provider": "sendgrid", "status": 503, "retry_after_secs": 120, "times": 2 });
    let resp = http
        .post(format!("{base}/sandbox/faults"))
        .json(&fault)
        .send()
        .await
        .expect("fault");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let typo = json!({ "provider": "sendgrid", "stauts": 503 });
    let resp = http
        .post(format!("{base}/sandbox/faults"))
        .json(&typo)
        .send()
        .await
        .expect("fault");
    assert!(resp.status().is_client_error());

    let mail = json!({
        "personalizations": [{ "to": [{ "email": "a@example.com" }] }],
        "from": { "email": "n@example.com" }, "subject": "s",
        "content": [{ "type": "text/plain", "value": "v" }],
    });
    let send = || {
        http.post(format!("{base}/v3/mail/send"))
            .bearer_auth(&creds().sendgrid.api_key)
            .json(&mail)
            .send()
    };
    for _ in 0..2 {
        let resp = send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "120");
    }
    let resp = send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(resp.headers().contains_key("x-message-id"));

    let list = |q: &'static str| {
        let url = format!("{base}/sandbox/messages{q}");
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .expect("list")
                .json::<Vec<Value>>()
                .await
                .expect("json")
        }
    };
    assert_eq!(list("?provider=sendgrid").await.len(), 1);
    assert_eq!(list("?provider=twilio").await.len(), 0);
    let resp = http
        .delete(format!("{base}/sandbox/messages"))
        .send()
        .await
        .expect("clear");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(list("").await.is_empty());

    // Dropping the handle stops the server.
    drop(sb);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .get(format!("{base}/sandbox/messages"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn credentials_round_trip_through_files() {
    let dir = std::env::temp_dir().join(format!("notify-sandbox-creds-{}", std::process::id()));
    let files = creds()
        .write_files(&dir, "http://127.0.0.1:18443")
        .expect("write");
    let loaded = TestCredentials::load(&files.credentials_path).expect("load");
    assert_eq!(loaded.apns.key_id, creds().apns.key_id);
    assert!(
        files
            .apns_key_path
            .ends_with(format!("AuthKey_{}.p8", creds().apns.key_id))
    );
    let account: Value = serde_json::from_str(
        &std::fs::read_to_string(&files.fcm_service_account_path).expect("read"),
    )
    .expect("json");
    assert_eq!(account["token_uri"], "http://127.0.0.1:18443/token");
    assert_eq!(account["client_email"], creds().fcm.client_email.as_str());
    assert!(
        account["private_key"]
            .as_str()
            .is_some_and(|k| k.contains("BEGIN PRIVATE KEY"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
