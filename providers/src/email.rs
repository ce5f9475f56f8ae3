//! The e-mail channel's provider, chosen by configuration.

use notify_runtime::records::ChannelMessage;

use crate::outcome::SendOutcome;
use crate::{SendGridClient, SmtpClient};

pub enum EmailClient {
    Smtp(SmtpClient),
    SendGrid(SendGridClient),
}

impl EmailClient {
    pub async fn send(&self, msg: &ChannelMessage) -> SendOutcome {
        match self {
            EmailClient::Smtp(c) => c.send(msg).await,
            EmailClient::SendGrid(c) => c.send(msg).await,
        }
    }
}
