//! Builds each channel's provider client from its settings, reading secrets from files.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use notify_providers::{
    ApnsClient, ApnsConfig, ChannelMessage, EmailClient, FcmClient, FcmConfig, SendError,
    SendGridClient, SendGridConfig, SendOutcome, ServiceAccount, SmtpClient, SmtpConfig,
    SmtpSecurity, TwilioClient, TwilioConfig, TwilioSender,
};

use crate::settings::{
    ApnsSettings, EmailProvider, EmailSettings, FcmSettings, Security, SmsSettings,
};

/// What the delivery processor needs of a provider client (tests substitute their own).
pub trait Provider: Send + Sync + 'static {
    fn send(&self, msg: &ChannelMessage) -> impl Future<Output = SendOutcome> + Send;
}

macro_rules! provider {
    ($($client:ty),*) => {$(
        impl Provider for $client {
            fn send(&self, msg: &ChannelMessage) -> impl Future<Output = SendOutcome> + Send {
                <$client>::send(self, msg)
            }
        }
    )*};
}
provider!(ApnsClient, FcmClient, TwilioClient, EmailClient);

fn read_secret(what: &str, path: &str) -> Result<String, SendError> {
    if path.is_empty() {
        return Err(SendError::Config(format!("{what} is not set")));
    }
    std::fs::read_to_string(Path::new(path))
        .map(|s| s.trim_end().to_string())
        .map_err(|e| SendError::Config(format!("{what} {path}: {e}")))
}

fn required(what: &str, value: &str) -> Result<String, SendError> {
    if value.trim().is_empty() {
        return Err(SendError::Config(format!("{what} is not set")));
    }
    Ok(value.to_string())
}

pub fn apns(s: &ApnsSettings) -> Result<ApnsClient, SendError> {
    ApnsClient::new(ApnsConfig {
        base_url: s.base_url.clone(),
        team_id: required("provider.team_id", &s.team_id)?,
        key_id: required("provider.key_id", &s.key_id)?,
        private_key_pem: read_secret("provider.key_file", &s.key_file)?,
        topic: required("provider.topic", &s.topic)?,
        timeout: Duration::from_millis(s.timeout_ms),
    })
}

pub fn fcm(s: &FcmSettings) -> Result<FcmClient, SendError> {
    required("provider.service_account_file", &s.service_account_file)?;
    FcmClient::new(FcmConfig {
        base_url: s.base_url.clone(),
        service_account: ServiceAccount::from_file(Path::new(&s.service_account_file))?,
        timeout: Duration::from_millis(s.timeout_ms),
    })
}

pub fn sms(s: &SmsSettings) -> Result<TwilioClient, SendError> {
    let sender = match (&s.from, &s.messaging_service_sid) {
        (Some(from), None) => TwilioSender::From(from.clone()),
        (None, Some(sid)) => TwilioSender::MessagingService(sid.clone()),
        _ => {
            return Err(SendError::Config(
                "set exactly one of provider.from and provider.messaging_service_sid".into(),
            ));
        }
    };
    TwilioClient::new(TwilioConfig {
        base_url: s.base_url.clone(),
        account_sid: required("provider.account_sid", &s.account_sid)?,
        auth_token: read_secret("provider.auth_token_file", &s.auth_token_file)?,
        sender,
        timeout: Duration::from_millis(s.timeout_ms),
    })
}

pub fn email(s: &EmailSettings) -> Result<EmailClient, SendError> {
    let timeout = Duration::from_millis(s.timeout_ms);
    match s.kind {
        EmailProvider::Smtp => {
            let credentials = match (&s.smtp_username, &s.smtp_password_file) {
                (Some(user), Some(file)) => Some((
                    user.clone(),
                    read_secret("provider.smtp_password_file", file)?,
                )),
                (None, None) => None,
                _ => {
                    return Err(SendError::Config(
                        "provider.smtp_username and provider.smtp_password_file go together".into(),
                    ));
                }
            };
            let root_cert_pem = match &s.smtp_root_cert_file {
                Some(file) => Some(read_secret("provider.smtp_root_cert_file", file)?),
                None => None,
            };
            let security = match s.smtp_security {
                Security::None => SmtpSecurity::None,
                Security::Starttls => SmtpSecurity::StartTls,
                Security::Tls => SmtpSecurity::Tls,
            };
            Ok(EmailClient::Smtp(SmtpClient::new(SmtpConfig {
                host: required("provider.smtp_host", &s.smtp_host)?,
                port: s.smtp_port,
                security,
                credentials,
                from: s.from.clone(),
                root_cert_pem,
                timeout,
            })?))
        }
        EmailProvider::Sendgrid => {
            let (from_name, from_email) = split_mailbox(&s.from);
            Ok(EmailClient::SendGrid(SendGridClient::new(
                SendGridConfig {
                    base_url: s.sendgrid_base_url.clone(),
                    api_key: read_secret(
                        "provider.sendgrid_api_key_file",
                        &s.sendgrid_api_key_file,
                    )?,
                    from_email: required("provider.from", &from_email)?,
                    from_name,
                    timeout,
                },
            )?))
        }
    }
}

/// `Name <addr>` into its parts; a bare address has no name.
fn split_mailbox(mailbox: &str) -> (Option<String>, String) {
    match (mailbox.find('<'), mailbox.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            let name = mailbox[..open].trim().trim_matches('"').trim();
            let addr = mailbox[open + 1..close].trim().to_string();
            ((!name.is_empty()).then(|| name.to_string()), addr)
        }
        _ => (None, mailbox.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_split() {
        assert_eq!(
            split_mailbox("Notify <n@example.com>"),
            (Some("Notify".into()), "n@example.com".into())
        );
        assert_eq!(
            split_mailbox("n@example.com"),
            (None, "n@example.com".into())
        );
    }

    #[test]
    fn missing_secrets_are_named() {
        let Err(err) = apns(&ApnsSettings::default()) else {
            panic!("an APNs client without credentials must not build");
        };
        assert!(err.to_string().contains("provider."), "{err}");
        let Err(err) = sms(&SmsSettings::default()) else {
            panic!("an SMS client without a sender must not build");
        };
        assert!(err.to_string().contains("from"), "{err}");
    }
}
