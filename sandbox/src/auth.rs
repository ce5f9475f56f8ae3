//! Credential checks shared by the stand-ins: bearer and basic auth headers, JWT verification.

use axum::http::{HeaderMap, header};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;

/// `Authorization: Bearer <token>` (scheme case-insensitive, as HTTP says).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// `Authorization: Basic base64(user:password)`.
pub(crate) fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Why a JWT was refused; the caller maps it to the provider's own error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JwtProblem {
    Malformed,
    WrongAlgorithm,
    WrongKeyId,
    BadSignature,
}

/// Verifies the signature and algorithm (and the `kid` header when one is expected) and
/// returns the claims. Time and issuer claims are checked by the caller, because each
/// provider has its own rules and error codes for them.
pub(crate) fn verify_jwt<C: DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    expected_kid: Option<&str>,
) -> Result<C, JwtProblem> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtProblem::Malformed)?;
    if header.alg != alg {
        return Err(JwtProblem::WrongAlgorithm);
    }
    if let Some(kid) = expected_kid
        && header.kid.as_deref() != Some(kid)
    {
        return Err(JwtProblem::WrongKeyId);
    }
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<C>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtProblem::BadSignature,
            _ => JwtProblem::Malformed,
        })
}
