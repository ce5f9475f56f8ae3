//! Against the project's real SMTP server (aiosmtpd on 127.0.0.1:12525, Maildir under
//! `.run/smtp/maildir`), which `dev/stack.sh` starts.

use std::path::PathBuf;
use std::time::Duration;

use notify_providers::{SendOutcome, SmtpClient, SmtpConfig, SmtpSecurity};
use notify_runtime::records::DeliveryChannel;

use crate::common::message;

fn maildir_new() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.run/smtp/maildir/new")
}

/// The stack's SMTP port (`NOTIFY_SMTP_PORT` moves it, as in dev/stack.sh).
fn smtp_port() -> u16 {
    std::env::var("NOTIFY_SMTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(12525)
}

fn client(port: u16) -> SmtpClient {
    SmtpClient::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        credentials: None,
        from: "Notify <notify@example.com>".into(),
        root_cert_pem: None,
        timeout: Duration::from_secs(5),
    })
    .expect("SMTP client")
}

#[tokio::test]
async fn delivers_multipart_mail_to_the_real_server() {
    let mut msg = message(DeliveryChannel::Email, "bob@example.org");
    let marker = msg.event_id.clone();
    msg.title = Some(format!("Parcel {marker}"));
    msg.body = format!("Plain text for {marker}.");
    msg.html_body = Some(format!("<p>HTML for <b>{marker}</b></p>"));
    // dev/stack.sh creates only the Maildir's root; Python's Maildir then fails to write
    // into tmp/. Creating the standard subfolders is what `maildirmake` would have done.
    let root = maildir_new().join("..");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(root.join(sub)).expect("maildir folders");
    }
    let outcome = client(smtp_port()).send(&msg).await;
    let message_id = match outcome {
        SendOutcome::Sent { provider_id } => provider_id,
        other => panic!("expected Sent (is dev/stack.sh running?), got {other:?}"),
    };
    assert!(message_id.ends_with("@example.com>"), "{message_id}");

    // aiosmtpd writes the file after answering; look for it for a few seconds.
    let mut found = None;
    for _ in 0..50 {
        found = std::fs::read_dir(maildir_new())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .find(|text| text.contains(&format!("Subject: Parcel {marker}")));
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mail = found.expect("message in the Maildir");
    assert!(
        mail.contains(&format!("Message-ID: {message_id}")),
        "{mail}"
    );
    assert!(mail.contains("To: bob@example.org"), "{mail}");
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("Content-Type: text/plain"), "{mail}");
    assert!(
        mail.contains(&format!("Plain text for {marker}.")),
        "{mail}"
    );
    assert!(mail.contains("Content-Type: text/html"), "{mail}");
    assert!(
        mail.contains(&format!("<p>HTML for <b>{marker}</b></p>")),
        "{mail}"
    );
}

#[tokio::test]
async fn unreachable_server_is_retryable_and_bad_address_permanent() {
    // A port nobody listens on (and, outside the ephemeral range, no connection takes).
    let port = notify_runtime::http::unused_loopback_port().expect("free port");
    let msg = message(DeliveryChannel::Email, "bob@example.org");
    let outcome = client(port).send(&msg).await;
    assert!(
        matches!(outcome, SendOutcome::Retryable { .. }),
        "{outcome:?}"
    );
    let bad = message(DeliveryChannel::Email, "not an address");
    let outcome = client(smtp_port()).send(&bad).await;
    assert!(
        matches!(outcome, SendOutcome::Permanent { .. }),
        "{outcome:?}"
    );
}
