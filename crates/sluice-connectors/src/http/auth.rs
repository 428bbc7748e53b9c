//! Request authentication: bearer token, API key header, HMAC-SHA256 body signature.
//! Every comparison is constant-time.

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
    /// HMAC-SHA256 of the raw body.
    Hmac {
        secret: String,
        header: String,
        prefix: String,
    },
}

impl Auth {
    /// Builds the rule; exactly one method must be given.
    pub fn from_config(config: &HttpAuth) -> Result<Auth, String> {
        let given = [
            config.bearer.is_some(),
            config.api_key.is_some(),
            config.hmac.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            return Err(format!(
                "`auth` needs exactly one of `bearer`, `api_key`, `hmac` ({given} given)"
            ));
        }
        let nonempty = |what: &str, s: &str| {
            if s.is_empty() {
                Err(format!(
                    "the {what} is empty; set it (usually from `${{env:…}}`)"
                ))
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
            return Err("`auth` needs one of `bearer`, `api_key`, `hmac`".to_owned());
        };
        nonempty("HMAC secret", &hmac.secret.0)?;
        Ok(Auth::Hmac {
            secret: hmac.secret.0.clone(),
            header: hmac.header.0.to_ascii_lowercase(),
            prefix: hmac.prefix.0.clone(),
        })
    }

    /// Whether the rule needs the body (checked after reading it).
    pub fn needs_body(&self) -> bool {
        matches!(self, Auth::Hmac { .. })
    }

    /// Checks a request; `body` is `None` before the body is read.
    pub fn check(&self, headers: &HeaderMap, body: Option<&[u8]>) -> Result<(), &'static str> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Auth::Bearer(token) => {
                let given = header("authorization")
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .ok_or("missing bearer token")?;
                constant_time_eq(given.trim().as_bytes(), token.as_bytes())
                    .then_some(())
                    .ok_or("wrong bearer token")
            }
            Auth::ApiKey {
                header: name,
                value,
            } => {
                let given = header(name).ok_or("missing API key")?;
                constant_time_eq(given.as_bytes(), value.as_bytes())
                    .then_some(())
                    .ok_or("wrong API key")
            }
            Auth::Hmac {
                secret,
                header: name,
                prefix,
            } => {
                let Some(body) = body else { return Ok(()) };
                let given = header(name).ok_or("missing signature")?;
                let hex_digest = given
                    .strip_prefix(prefix.as_str())
                    .ok_or("malformed signature")?;
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .map_err(|_| "unusable HMAC secret")?;
                mac.update(body);
                let expected = hex::encode(mac.finalize().into_bytes());
                constant_time_eq(
                    hex_digest.trim().to_ascii_lowercase().as_bytes(),
                    expected.as_bytes(),
                )
                .then_some(())
                .ok_or("wrong signature")
            }
        }
    }
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
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"{}");
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let mut headers = HeaderMap::new();
        headers.insert("x-signature", HeaderValue::from_str(&sig).unwrap());
        assert!(auth.check(&headers, Some(b"{}")).is_ok());
        assert!(auth.check(&headers, Some(b"{ }")).is_err());
        let bearer = Auth::Bearer("t".into());
        assert!(bearer.check(&HeaderMap::new(), None).is_err());
    }
}
