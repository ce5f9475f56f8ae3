//! OAuth2 access tokens for FCM from a Google service account (RFC 7523 JWT-bearer grant).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::SendError;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Renew this long before the token expires so no request goes out with a dying token.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The fields of a service-account JSON key file that the token exchange needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

impl ServiceAccount {
    pub fn from_json(text: &str) -> Result<Self, SendError> {
        serde_json::from_str(text)
            .map_err(|e| SendError::Config(format!("service-account JSON: {e}")))
    }

    pub fn from_file(path: &Path) -> Result<Self, SendError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SendError::Config(format!("reading {}: {e}", path.display())))?;
        Self::from_json(&text)
    }
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

pub(crate) struct AccessTokens {
    account: ServiceAccount,
    key: EncodingKey,
    /// An async mutex: concurrent sends wait for one exchange instead of each doing one.
    cached: Mutex<Option<(String, Instant)>>,
}

impl AccessTokens {
    pub fn new(account: ServiceAccount) -> Result<Self, SendError> {
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| SendError::Config(format!("service-account private_key: {e}")))?;
        Ok(Self {
            account,
            key,
            cached: Mutex::new(None),
        })
    }

    /// A valid access token, from the cache or a fresh exchange.
    pub async fn get(&self, http: &reqwest::Client) -> Result<String, SendError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, valid_until)) = cached.as_ref()
            && Instant::now() < *valid_until
        {
            return Ok(token.clone());
        }
        let (token, expires_in) = self.exchange(http).await?;
        let lifetime = Duration::from_secs(expires_in).saturating_sub(EXPIRY_MARGIN);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// Forgets the cached token, after FCM refused it.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn exchange(&self, http: &reqwest::Client) -> Result<(String, u64), SendError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Assertion {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: &self.account.token_uri,
            iat,
            exp: iat + 3600,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| SendError::Credentials(format!("signing the assertion: {e}")))?;
        let resp = http
            .post(&self.account.token_uri)
            .form(&[("grant_type", GRANT_TYPE), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|e| SendError::CredentialsUnavailable(format!("token exchange: {e}")))?;
        let status = resp.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(SendError::CredentialsUnavailable(format!(
                "token exchange answered {status}"
            )));
        }
        let text = resp
            .text()
            .await
            .map_err(|e| SendError::CredentialsUnavailable(format!("token exchange: {e}")))?;
        if !status.is_success() {
            return Err(SendError::Credentials(format!(
                "token exchange refused ({status}): {text}"
            )));
        }
        let parsed: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| SendError::Credentials(format!("token response: {e}")))?;
        Ok((parsed.access_token, parsed.expires_in))
    }
}
