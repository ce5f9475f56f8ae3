//! A schema registry that fails on demand: an HTTP proxy in front of the real one that, when
//! told to, answers every request with a chosen status instead (500, 503, 429, 401, ...), so a
//! test can take the registry away from one processor without touching the shared one.
//!
//! [`RegistryProxy::start_secured`] serves it as a secured cluster's registry is served: over
//! TLS with a certificate of a private CA, answering 401 to a request without the right basic
//! credentials (and counting both kinds).

use std::sync::atomic::{AtomicU64, Ordering};
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
    failed: Arc<AtomicU64>,
    /// The `authorization` header a request must carry (secured); None: any.
    required_auth: Option<String>,
    authorized: Arc<AtomicU64>,
    unauthorized: Arc<AtomicU64>,
}

/// The certificate the secured proxy presents: a PKCS#12 key store and its password.
pub struct TlsIdentity {
    pub pkcs12: std::path::PathBuf,
    pub password: String,
}

pub struct RegistryProxy {
    /// Base URL to configure as `registry.url` (same API path as the upstream).
    pub url: String,
    shared: Shared,
}

impl RegistryProxy {
    /// Starts a proxy for `upstream` (e.g. `http://127.0.0.1:18081/apis/ccompat/v7`).
    pub async fn start(upstream: &str) -> RegistryProxy {
        let listener = bind().await;
        let addr = listener.local_addr().expect("addr");
        serve(
            listener,
            Shared::new(upstream, None),
            format!("http://{addr}"),
        )
    }

    /// As [`start`](Self::start), over TLS as `identity` (its certificate names `localhost`),
    /// and only for requests with basic credentials `user`/`password`.
    pub async fn start_secured(
        upstream: &str,
        identity: &TlsIdentity,
        user: &str,
        password: &str,
    ) -> RegistryProxy {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let shared = Shared::new(upstream, Some(format!("Basic {token}")));
        let der = std::fs::read(&identity.pkcs12).expect("key store");
        let identity =
            tokio_native_tls::native_tls::Identity::from_pkcs12(&der, &identity.password)
                .expect("key store opens");
        let acceptor = tokio_native_tls::native_tls::TlsAcceptor::new(identity).expect("acceptor");
        let listener = TlsListener {
            tcp: bind().await,
            acceptor: acceptor.into(),
        };
        let port = listener.tcp.local_addr().expect("addr").port();
        serve(listener, shared, format!("https://localhost:{port}"))
    }

    /// Requests with the right credentials (secured), and without them.
    pub fn requests_by_authorization(&self) -> (u64, u64) {
        (
            self.shared.authorized.load(Ordering::Relaxed),
            self.shared.unauthorized.load(Ordering::Relaxed),
        )
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
        self.shared.failed.load(Ordering::Relaxed)
    }
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(required) = &s.required_auth {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(required.as_str()) {
            s.unauthorized.fetch_add(1, Ordering::Relaxed);
            let body = r#"{"error_code":40101,"message":"unauthorized"}"#;
            return (
                StatusCode::UNAUTHORIZED,
                [("content-type", "application/json")],
                body,
            )
                .into_response();
        }
        s.authorized.fetch_add(1, Ordering::Relaxed);
    }
    let failing = *s.failing_with.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(code) = failing {
        s.failed.fetch_add(1, Ordering::Relaxed);
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
        if name != "host" && name != "content-length" && name != "authorization" {
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

impl Shared {
    fn new(upstream: &str, required_auth: Option<String>) -> Shared {
        Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            failing_with: Arc::new(Mutex::new(None)),
            failed: Arc::default(),
            required_auth,
            authorized: Arc::default(),
            unauthorized: Arc::default(),
        }
    }
}

/// Serves the proxy on `listener` in the background; `url` is where clients reach it.
fn serve<L>(listener: L, shared: Shared, url: String) -> RegistryProxy
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let app = Router::new().fallback(handle).with_state(shared.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    RegistryProxy { url, shared }
}

async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind registry proxy")
}

/// Connections of a TCP listener after their TLS handshake; one that fails it (a client that
/// does not trust the CA) is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_native_tls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_native_tls::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
