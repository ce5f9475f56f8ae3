//! STARTTLS and AUTH against a real aiosmtpd started by the test (from the project's venv),
//! with a throw-away certificate made by openssl.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use notify_providers::{SmtpClient, SmtpConfig, SmtpSecurity};
use notify_runtime::records::DeliveryChannel;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::message;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn make_cert(dir: &Path) {
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl failed");
}

async fn start_server(dir: &Path, port: u16) -> Child {
    let python = repo().join(".cache/venv/bin/python");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/providers/fixtures/smtp_tls_auth.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(dir.join("cert.pem"))
        .arg(dir.join("key.pem"))
        .arg(port.to_string())
        .arg(dir.join("received.eml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("aiosmtpd from the venv (dev/stack.sh installs it)");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("server ready in time")
    .expect("read");
    assert_eq!(line.trim(), "ready");
    child
}

fn client(port: u16, security: SmtpSecurity, password: &str, cert: &str) -> SmtpClient {
    SmtpClient::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security,
        credentials: Some(("notify".into(), password.into())),
        from: "notify@example.com".into(),
        root_cert_pem: Some(cert.into()),
        timeout: Duration::from_secs(10),
    })
    .expect("SMTP client")
}

#[tokio::test]
async fn starttls_with_auth() {
    let dir = std::env::temp_dir().join(format!("notify-smtp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    make_cert(&dir);
    let cert = std::fs::read_to_string(dir.join("cert.pem")).expect("cert");
    let port = notify_runtime::http::unused_loopback_port().expect("free port");
    let mut server = start_server(&dir, port).await;

    let mut msg = message(DeliveryChannel::Email, "carol@example.net");
    msg.title = Some(format!("TLS {}", msg.event_id));
    let outcome = client(port, SmtpSecurity::StartTls, "s3cret", &cert)
        .send(&msg)
        .await;
    assert!(outcome.is_sent(), "{outcome:?}");
    let received = std::fs::read_to_string(dir.join("received.eml")).expect("stored mail");
    assert!(received.contains(&format!("Subject: TLS {}", msg.event_id)));

    // Without STARTTLS the server refuses to authenticate, let alone take the mail.
    let outcome = client(port, SmtpSecurity::None, "s3cret", &cert)
        .send(&msg)
        .await;
    assert!(!outcome.is_sent(), "{outcome:?}");

    drop(server.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
