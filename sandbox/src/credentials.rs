//! Throw-away credentials for tests and `make dev`: an APNs .p8 key, an FCM service account,
//! Twilio and SendGrid secrets, plus the matching sandbox configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::rand_core::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::state::random_hex;
use crate::{ApnsAccount, FcmAccount, SandboxConfig, SandboxError, SendGridAccount, TwilioAccount};

/// Every secret the providers' clients need and the public halves the sandbox checks with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestCredentials {
    pub apns: ApnsAccount,
    /// PKCS#8 PEM, the content of Apple's `AuthKey_<KEYID>.p8`.
    pub apns_private_key_pem: String,
    pub fcm: FcmAccount,
    /// PKCS#8 PEM, as in a Google service-account JSON.
    pub fcm_private_key_pem: String,
    pub twilio: TwilioAccount,
    pub sendgrid: SendGridAccount,
}

/// Where [`TestCredentials::write_files`] put things.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    pub apns_key_path: PathBuf,
    pub fcm_service_account_path: PathBuf,
    /// The whole [`TestCredentials`] as JSON, for `notify sandbox` to load.
    pub credentials_path: PathBuf,
}

impl TestCredentials {
    /// Fresh keys: P-256 for APNs, RSA-2048 for the FCM service account.
    pub fn generate() -> Result<Self, SandboxError> {
        let key_err = |e: &dyn std::fmt::Display| SandboxError::Key(e.to_string());
        let ec = p256::SecretKey::random(&mut OsRng);
        let apns_private_key_pem = ec
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| key_err(&e))?
            .to_string();
        let apns_public = ec
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| key_err(&e))?;
        let rsa_key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| key_err(&e))?;
        let fcm_private_key_pem = rsa_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| key_err(&e))?
            .to_string();
        let fcm_public = rsa_key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| key_err(&e))?;
        let project_id = "notify-sandbox".to_string();
        Ok(Self {
            apns: ApnsAccount {
                team_id: random_hex(5).to_uppercase(),
                key_id: random_hex(5).to_uppercase(),
                public_key_pem: apns_public,
                topic: None,
            },
            apns_private_key_pem,
            fcm: FcmAccount {
                client_email: format!("notify-sender@{project_id}.iam.gserviceaccount.com"),
                project_id,
                public_key_pem: fcm_public,
            },
            fcm_private_key_pem,
            twilio: TwilioAccount {
                account_sid: format!("AC{}", random_hex(16)),
                auth_token: random_hex(16),
            },
            sendgrid: SendGridAccount {
                api_key: format!("SG.{}.{}", random_hex(11), random_hex(21)),
            },
        })
    }

    /// A sandbox that accepts exactly these credentials.
    pub fn sandbox_config(&self, listen: SocketAddr) -> SandboxConfig {
        SandboxConfig {
            listen,
            apns: self.apns.clone(),
            fcm: self.fcm.clone(),
            twilio: self.twilio.clone(),
            sendgrid: self.sendgrid.clone(),
        }
    }

    /// A Google service-account JSON whose `token_uri` is the sandbox's.
    pub fn service_account_json(&self, token_uri: &str) -> serde_json::Value {
        json!({
            "type": "service_account",
            "project_id": self.fcm.project_id,
            "private_key_id": random_hex(20),
            "private_key": self.fcm_private_key_pem,
            "client_email": self.fcm.client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        })
    }

    /// Writes `AuthKey_<KEYID>.p8`, `service-account.json` (token URI under
    /// `sandbox_base_url`) and `credentials.json` into `dir`, creating it.
    pub fn write_files(
        &self,
        dir: &Path,
        sandbox_base_url: &str,
    ) -> Result<CredentialFiles, SandboxError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let files = CredentialFiles {
            apns_key_path: dir.join(format!("AuthKey_{}.p8", self.apns.key_id)),
            fcm_service_account_path: dir.join("service-account.json"),
            credentials_path: dir.join("credentials.json"),
        };
        let token_uri = format!("{}/token", sandbox_base_url.trim_end_matches('/'));
        let account = self.service_account_json(&token_uri);
        let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
        let all = serde_json::to_value(self).unwrap_or_default();
        std::fs::write(&files.apns_key_path, &self.apns_private_key_pem)
            .map_err(io(&files.apns_key_path))?;
        std::fs::write(&files.fcm_service_account_path, pretty(&account))
            .map_err(io(&files.fcm_service_account_path))?;
        std::fs::write(&files.credentials_path, pretty(&all))
            .map_err(io(&files.credentials_path))?;
        Ok(files)
    }

    /// Reads a `credentials.json` written by [`TestCredentials::write_files`].
    pub fn load(path: &Path) -> Result<Self, SandboxError> {
        let text = std::fs::read_to_string(path).map_err(|source| SandboxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| SandboxError::Key(format!("{path:?}: {e}")))
    }
}

/// Generates fresh credentials and writes them into `dir` (see [`TestCredentials::write_files`]).
pub fn generate_test_credentials(
    dir: &Path,
    sandbox_base_url: &str,
) -> Result<(TestCredentials, CredentialFiles), SandboxError> {
    let creds = TestCredentials::generate()?;
    let files = creds.write_files(dir, sandbox_base_url)?;
    Ok((creds, files))
}
