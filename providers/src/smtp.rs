//! SMTP client (lettre): plain, STARTTLS or implicit TLS, optional AUTH, multipart plain+HTML.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use notify_runtime::records::ChannelMessage;
use uuid::Uuid;

use crate::SendError;
use crate::outcome::SendOutcome;

/// Namespace for Message-IDs: a resend of one event to one address has the same Message-ID,
/// which lets receiving systems and humans spot it.
const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2b8e_91d4_77a0_4e0f_8c35_d1a6_5e20_f4b7);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain text; only for a relay on loopback or a trusted network.
    None,
    /// Upgrade with STARTTLS, refusing to continue without it.
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// `(user, password)` for AUTH; `None` sends without authenticating.
    pub credentials: Option<(String, String)>,
    /// Sender mailbox, e.g. `Notify <notify@example.com>`.
    pub from: String,
    /// Extra trusted root certificate (PEM), for a relay with a private CA.
    pub root_cert_pem: Option<String>,
    pub timeout: Duration,
}

pub struct SmtpClient {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
}

impl SmtpClient {
    pub fn new(config: SmtpConfig) -> Result<Self, SendError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| SendError::Config(format!("SMTP from {:?}: {e}", config.from)))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .timeout(Some(config.timeout));
        if config.security != SmtpSecurity::None {
            let mut tls = TlsParameters::builder(config.host.clone());
            if let Some(pem) = &config.root_cert_pem {
                let cert = Certificate::from_pem(pem.as_bytes())
                    .map_err(|e| SendError::Config(format!("SMTP root certificate: {e}")))?;
                tls = tls.add_root_certificate(cert);
            }
            let tls = tls
                .build()
                .map_err(|e| SendError::Config(format!("SMTP TLS: {e}")))?;
            builder = builder.tls(match config.security {
                SmtpSecurity::Tls => Tls::Wrapper(tls),
                _ => Tls::Required(tls),
            });
        }
        if let Some((user, password)) = config.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self {
            transport: builder.build(),
            domain: from.email.domain().to_string(),
            from,
        })
    }

    /// Sends an e-mail to `msg.recipient`; the outcome's id is the Message-ID.
    pub async fn send(&self, msg: &ChannelMessage) -> SendOutcome {
        let to: Mailbox = match msg.recipient.parse() {
            Ok(to) => to,
            Err(e) => return SendOutcome::permanent(format!("invalid address: {e}")),
        };
        let id = Uuid::new_v5(
            &MESSAGE_ID_NAMESPACE,
            format!("{}\n{}", msg.event_id, msg.recipient).as_bytes(),
        );
        let message_id = format!("<{id}@{}>", self.domain);
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(msg.title.as_deref().unwrap_or(crate::DEFAULT_SUBJECT))
            .message_id(Some(message_id.clone()));
        let built = match &msg.html_body {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                msg.body.clone(),
                html.clone(),
            )),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(msg.body.clone()),
        };
        let email = match built {
            Ok(email) => email,
            Err(e) => return SendOutcome::permanent(format!("cannot build e-mail: {e}")),
        };
        match self.transport.send(email).await {
            Ok(_) => SendOutcome::Sent {
                provider_id: message_id,
            },
            // 535 and friends: our credentials, not the message.
            Err(e) if e.status().is_some_and(|c| c.to_string().starts_with("53")) => {
                SendOutcome::Unavailable {
                    reason: format!("SMTP authentication: {e}"),
                }
            }
            // 5xx replies: the server will refuse this message again.
            Err(e) if e.is_permanent() => SendOutcome::permanent(format!("SMTP: {e}")),
            // The message was handed over and the answer never came.
            Err(e) if e.is_timeout() => SendOutcome::InDoubt {
                reason: format!("SMTP timeout: {e}"),
            },
            // 4xx replies, connection and TLS trouble.
            Err(e) => SendOutcome::retryable(format!("SMTP: {e}")),
        }
    }
}
