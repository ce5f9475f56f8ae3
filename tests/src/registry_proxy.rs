//! A schema registry that fails on demand: an HTTP proxy in front of the real one that, when
//! told to, answers every request with a chosen status instead (500, 503, 429, 401, ...), so a
//! test can take the registry away from one processor without touching the shared one.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Clone)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    failing_with: Arc<Mutex<Option<u16>>>,
    failed: Arc<std::sync::atomic::AtomicU64>,
}

pub struct RegistryProxy {
    /// Base URL to configure as `registry.url` (same API path as the upstream).
    pub url: String,
    shared: Shared,
}

impl RegistryProxy {
    /// Starts a proxy for `upstream` (e.g. `http://127.0.0.1:18081/apis/ccompat/v7`).
    pub async fn start(upstream: &str) -> RegistryProxy {
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            failing_with: Arc::new(Mutex::new(None)),
            failed: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind registry proxy");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RegistryProxy {
            url: format!("http://{addr}"),
            shared,
        }
    }

    /// From now on every request gets `status` (None: pass through to the real registry).
    pub fn fail_with(&self, status: Option<u16>) {
        *self
            .shared
            .failing_with
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = status;
    }

    /// Requests answered with an injected failure so far.
    pub fn failed_requests(&self) -> u64 {
        self.shared
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let failing = *s.failing_with.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(code) = failing {
        s.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = format!(r#"{{"error_code":{code}01,"message":"injected by the test"}}"#);
        return (status, [("content-type", "application/json")], body).into_response();
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = s
        .client
        .request(method, format!("{}{path}", s.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(r) => {
            let status = r.status();
            let content_type = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let bytes = r.bytes().await.unwrap_or_default();
            (status, [("content-type", content_type)], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
