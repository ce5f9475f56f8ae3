//! Shared state of one sandbox: its accounts, what it recorded, injected faults, issued tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::DecodingKey;

use crate::faults::FaultTable;
use crate::record::Recorder;
use crate::{SandboxConfig, SandboxError};

pub(crate) struct AppState {
    pub config: SandboxConfig,
    pub base_url: String,
    pub records: Recorder,
    pub faults: FaultTable,
    /// Parsed once: every APNs request carries a JWT to verify.
    pub apns_key: DecodingKey,
    pub fcm_key: DecodingKey,
    /// Access token -> expiry (unix seconds) for tokens issued by the FCM token URI.
    pub fcm_tokens: Mutex<HashMap<String, u64>>,
    /// APNs provider tokens whose signature and issuer were verified -> their `iat`. A
    /// client reuses one token for up to an hour (as Apple asks), so the signature check is
    /// done once per token, not once per push; age is still checked on every request.
    pub apns_verified: Mutex<HashMap<String, u64>>,
}

impl AppState {
    pub fn new(config: SandboxConfig, base_url: String) -> Result<Self, SandboxError> {
        let apns_key = DecodingKey::from_ec_pem(config.apns.public_key_pem.as_bytes())
            .map_err(|e| SandboxError::Key(format!("APNs public key: {e}")))?;
        let fcm_key = DecodingKey::from_rsa_pem(config.fcm.public_key_pem.as_bytes())
            .map_err(|e| SandboxError::Key(format!("FCM public key: {e}")))?;
        Ok(Self {
            config,
            base_url,
            records: Recorder::default(),
            faults: FaultTable::default(),
            apns_key,
            fcm_key,
            fcm_tokens: Mutex::new(HashMap::new()),
            apns_verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base_url)
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Locks a mutex, recovering the data if a handler panicked while holding it: the sandbox's
/// state stays usable for the rest of a test run.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A random opaque id (hex), for message ids, SIDs and access tokens.
pub(crate) fn random_hex(bytes: usize) -> String {
    use rsa::rand_core::{OsRng, RngCore};
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
