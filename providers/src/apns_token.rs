//! The APNs provider token: an ES256 JWT that Apple accepts for one hour and wants refreshed
//! no more often than every 20 minutes. One token is shared by every request of a client.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::SendError;

/// Refresh well inside Apple's one-hour validity, leaving room for clock skew.
pub(crate) const REFRESH_AFTER_SECS: u64 = 50 * 60;
/// Apple answers TooManyProviderTokenUpdates to faster refreshes.
pub(crate) const MIN_REFRESH_SECS: u64 = 20 * 60;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

pub(crate) struct ProviderToken {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    current: Option<(u64, String)>,
    /// Set when APNs said the token expired: refresh as soon as Apple allows.
    stale: bool,
}

impl ProviderToken {
    pub fn new(p8_pem: &str, key_id: &str, team_id: &str) -> Result<Self, SendError> {
        let key = EncodingKey::from_ec_pem(p8_pem.as_bytes())
            .map_err(|e| SendError::Config(format!("APNs .p8 key: {e}")))?;
        Ok(Self {
            key,
            key_id: key_id.to_string(),
            team_id: team_id.to_string(),
            current: None,
            stale: false,
        })
    }

    /// The token to use at `now` (unix seconds), signing a new one when due. The clock is a
    /// parameter so that the refresh rule is testable without waiting an hour.
    pub fn get(&mut self, now: u64) -> Result<String, SendError> {
        if let Some((issued, token)) = &self.current {
            let age = now.saturating_sub(*issued);
            let due = age >= REFRESH_AFTER_SECS || (self.stale && age >= MIN_REFRESH_SECS);
            // A clock that went backwards would make the old token look fresh for too long.
            if !due && now >= *issued {
                return Ok(token.clone());
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims {
            iss: &self.team_id,
            iat: now,
        };
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| SendError::Credentials(format!("signing the APNs token: {e}")))?;
        self.current = Some((now, token.clone()));
        self.stale = false;
        Ok(token)
    }

    /// APNs rejected the token as expired.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    #[cfg(test)]
    pub fn issued_at(&self) -> Option<u64> {
        self.current.as_ref().map(|(iat, _)| *iat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ProviderToken {
        let creds = notify_sandbox::TestCredentials::generate().expect("test keys");
        ProviderToken::new(&creds.apns_private_key_pem, "KEY1234567", "TEAM123456")
            .expect("key parses")
    }

    #[test]
    fn reuses_then_refreshes_at_fifty_minutes() {
        let mut t = token();
        let t0 = 1_700_000_000;
        let first = t.get(t0).expect("sign");
        assert_eq!(t.get(t0 + 60).expect("sign"), first);
        assert_eq!(t.get(t0 + REFRESH_AFTER_SECS - 1).expect("sign"), first);
        assert_eq!(t.issued_at(), Some(t0));
        let second = t.get(t0 + REFRESH_AFTER_SECS).expect("sign");
        assert_ne!(second, first);
        assert_eq!(t.issued_at(), Some(t0 + REFRESH_AFTER_SECS));
        let header = jsonwebtoken::decode_header(&second).expect("header");
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("KEY1234567"));
    }

    #[test]
    fn stale_token_waits_for_the_twenty_minute_floor() {
        let mut t = token();
        let t0 = 1_700_000_000;
        let first = t.get(t0).expect("sign");
        t.mark_stale();
        assert_eq!(t.get(t0 + MIN_REFRESH_SECS - 1).expect("sign"), first);
        let second = t.get(t0 + MIN_REFRESH_SECS).expect("sign");
        assert_ne!(second, first);
        // Fresh again: the next call keeps it.
        assert_eq!(t.get(t0 + MIN_REFRESH_SECS + 1).expect("sign"), second);
    }

    #[test]
    fn clock_going_backwards_signs_anew() {
        let mut t = token();
        let first = t.get(1_700_000_000).expect("sign");
        let second = t.get(1_699_999_000).expect("sign");
        assert_ne!(first, second);
    }

    #[test]
    fn rejects_a_key_that_is_not_pkcs8_ec() {
        assert!(matches!(
            ProviderToken::new("not a key", "K", "T"),
            Err(SendError::Config(_))
        ));
    }
}
