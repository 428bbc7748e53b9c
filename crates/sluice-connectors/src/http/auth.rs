//! Request authentication: bearer token, API key header, HMAC-SHA256 body signature (with
//! an optional signed timestamp against replays). Every comparison is constant-time, and
//! everything that can be decided from the headers is decided before the body is read.

use super::HttpError;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sluice_flow::HttpAuth;

/// A compiled authentication rule.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// A key in a header.
    ApiKey { header: String, value: String },
    /// HMAC-SHA256 of the raw body (or of `<timestamp>.<body>`).
    Hmac {
        secret: String,
        header: String,
        prefix: String,
        timestamp: Option<Timestamp>,
    },
}

/// The replay guard of an HMAC rule.
#[derive(Clone)]
pub struct Timestamp {
    /// The header carrying the Unix time (seconds) of signing; lower-case.
    pub header: String,
    /// How far it may be from this server's clock, either way.
    pub tolerance: std::time::Duration,
}

/// The length of a hex-encoded SHA-256 digest.
const HEX_DIGEST_LEN: usize = 64;

impl Auth {
    /// Builds the rule; exactly one method must be given.
    pub fn from_config(config: &HttpAuth) -> Result<Auth, HttpError> {
        let given = [
            config.bearer.is_some(),
            config.api_key.is_some(),
            config.hmac.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            return Err(HttpError::AuthMethods(given));
        }
        let nonempty = |what: &'static str, s: &str| {
            if s.is_empty() {
                Err(HttpError::EmptyAuthSetting(what))
            } else {
                Ok(())
            }
        };
        if let Some(token) = &config.bearer {
            nonempty("bearer token", &token.0)?;
            return Ok(Auth::Bearer(token.0.clone()));
        }
        if let Some(key) = &config.api_key {
            nonempty("API key", &key.value.0)?;
            return Ok(Auth::ApiKey {
                header: key.header.0.to_ascii_lowercase(),
                value: key.value.0.clone(),
            });
        }
        let Some(hmac) = &config.hmac else {
            return Err(HttpError::AuthMethods(0));
        };
        nonempty("HMAC secret", &hmac.secret.0)?;
        let timestamp = match &hmac.timestamp {
            Some(t) => {
                if t.value.tolerance.value.0.is_zero() {
                    return Err(HttpError::ZeroTolerance);
                }
                nonempty("timestamp header name", &t.value.header.0)?;
                Some(Timestamp {
                    header: t.value.header.0.to_ascii_lowercase(),
                    tolerance: t.value.tolerance.value.0,
                })
            }
            None => None,
        };
        Ok(Auth::Hmac {
            secret: hmac.secret.0.clone(),
            header: hmac.header.0.to_ascii_lowercase(),
            prefix: hmac.prefix.0.clone(),
            timestamp,
        })
    }

    /// Headers that carry this rule's credentials, never copied into message metadata
    /// (besides `authorization`, which never is).
    pub fn credential_header(&self) -> Option<&str> {
        match self {
            Auth::Bearer(_) => None,
            Auth::ApiKey { header, .. } | Auth::Hmac { header, .. } => Some(header),
        }
    }

    /// Whether the rule needs the body (checked after reading it).
    pub fn needs_body(&self) -> bool {
        matches!(self, Auth::Hmac { .. })
    }

    /// Checks a request; `body` is `None` before the body is read, when everything the
    /// headers alone decide is checked (a missing, malformed or stale signature is refused
    /// before any of the body is read). `now` is the Unix time in seconds.
    pub fn check(
        &self,
        headers: &HeaderMap,
        body: Option<&[u8]>,
        now: u64,
    ) -> Result<(), HttpError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Auth::Bearer(token) => {
                let given = header("authorization")
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .ok_or(HttpError::MissingBearer)?;
                constant_time_eq(given.trim().as_bytes(), token.as_bytes())
                    .then_some(())
                    .ok_or(HttpError::WrongBearer)
            }
            Auth::ApiKey {
                header: name,
                value,
            } => {
                let given = header(name).ok_or(HttpError::MissingApiKey)?;
                constant_time_eq(given.as_bytes(), value.as_bytes())
                    .then_some(())
                    .ok_or(HttpError::WrongApiKey)
            }
            Auth::Hmac {
                secret,
                header: name,
                prefix,
                timestamp,
            } => {
                let given =
                    header(name).ok_or_else(|| HttpError::MissingSignature(name.clone()))?;
                let hex_digest = given
                    .strip_prefix(prefix.as_str())
                    .map(str::trim)
                    .filter(|d| {
                        d.len() == HEX_DIGEST_LEN && d.bytes().all(|b| b.is_ascii_hexdigit())
                    })
                    .ok_or_else(|| HttpError::MalformedSignature {
                        header: name.clone(),
                        prefix: prefix.clone(),
                    })?;
                let signed_at = match timestamp {
                    Some(t) => Some(fresh_timestamp(headers, t, now)?),
                    None => None,
                };
                let Some(body) = body else { return Ok(()) };
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .map_err(|_| HttpError::UnusableSecret)?;
                if let Some(signed_at) = signed_at {
                    // The timestamp is part of what is signed, so it cannot be refreshed
                    // to replay an old request.
                    mac.update(signed_at.as_bytes());
                    mac.update(b".");
                }
                mac.update(body);
                let expected = hex::encode(mac.finalize().into_bytes());
                constant_time_eq(
                    hex_digest.to_ascii_lowercase().as_bytes(),
                    expected.as_bytes(),
                )
                .then_some(())
                .ok_or(HttpError::WrongSignature)
            }
        }
    }
}

/// The timestamp header's text, when it is a Unix time within the tolerance of `now`.
fn fresh_timestamp<'h>(
    headers: &'h HeaderMap,
    t: &Timestamp,
    now: u64,
) -> Result<&'h str, HttpError> {
    let text = headers
        .get(t.header.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| HttpError::MissingTimestamp(t.header.clone()))?;
    let at: u64 = text
        .parse()
        .ok()
        .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| HttpError::MalformedTimestamp(t.header.clone()))?;
    let skew = now.abs_diff(at);
    let tolerance = t.tolerance.as_secs();
    if skew > tolerance {
        return Err(HttpError::StaleTimestamp {
            skew,
            in_future: at >= now,
            tolerance,
        });
    }
    Ok(text)
}

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Compares without an early exit, so timing does not reveal how much of a secret matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn hmac_signatures_verify() {
        let auth = Auth::Hmac {
            secret: "s3cret".into(),
            header: "x-signature".into(),
            prefix: "sha256=".into(),
            timestamp: None,
        };
        let sig = format!("sha256={}", sign(b"{}"));
        let mut headers = HeaderMap::new();
        headers.insert("x-signature", HeaderValue::from_str(&sig).unwrap());
        assert!(auth.check(&headers, None, 0).is_ok());
        assert!(auth.check(&headers, Some(b"{}"), 0).is_ok());
        assert!(auth.check(&headers, Some(b"{ }"), 0).is_err());
        let bearer = Auth::Bearer("t".into());
        assert!(bearer.check(&HeaderMap::new(), None, 0).is_err());
        // Decided before the body: no signature, or one that cannot be a digest.
        assert_eq!(
            auth.check(&HeaderMap::new(), None, 0)
                .unwrap_err()
                .to_string(),
            "missing signature (header `x-signature`)"
        );
        headers.insert("x-signature", HeaderValue::from_static("sha256=zz"));
        assert_eq!(
            auth.check(&headers, None, 0).unwrap_err().to_string(),
            "malformed signature: `x-signature` must hold `sha256=` and 64 hex digits"
        );
    }

    fn sign(data: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signed_timestamps_refuse_stale_and_refreshed_requests() {
        let auth = Auth::Hmac {
            secret: "s3cret".into(),
            header: "x-signature".into(),
            prefix: String::new(),
            timestamp: Some(Timestamp {
                header: "x-signature-timestamp".into(),
                tolerance: std::time::Duration::from_secs(300),
            }),
        };
        let headers = |ts: &str, sig: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-signature", HeaderValue::from_str(sig).unwrap());
            h.insert("x-signature-timestamp", HeaderValue::from_str(ts).unwrap());
            h
        };
        let body = b"{\"a\":1}";
        let sig = sign(b"1000.{\"a\":1}");
        assert!(auth.check(&headers("1000", &sig), Some(body), 1100).is_ok());
        let stale = auth
            .check(&headers("1000", &sig), None, 1400)
            .unwrap_err()
            .to_string();
        assert!(
            stale.contains("stale") && stale.contains("400s old"),
            "{stale}"
        );
        let ahead = auth
            .check(&headers("2000", &sig), None, 1400)
            .unwrap_err()
            .to_string();
        assert!(ahead.contains("600s in the future"), "{ahead}");
        // The same signature with a fresh timestamp: the timestamp is signed.
        let refreshed = auth.check(&headers("1390", &sig), Some(body), 1400);
        assert_eq!(refreshed.unwrap_err().to_string(), "wrong signature");
        assert!(auth.check(&headers("x1", &sig), None, 1400).is_err());
    }
}
