//! String values with `${env:NAME}` / `${env:NAME:-default}` substituted at load time.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::ops::Deref;

/// A string from a flow file, with environment references already substituted.
///
/// Substitution happens while deserializing so that a missing variable is reported at the
/// value's own line and column, and the snippet shown to the user keeps the `${env:…}` text
/// rather than a secret.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(pub String);

impl Text {
    /// The substituted value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        // Every value taken from the environment is remembered as a secret, so that no
        // error, envelope or log line can print it (see `secrets`).
        substitute_env(&raw, |name| {
            let value = std::env::var(name).ok();
            if let Some(value) = &value {
                crate::secrets::remember(value);
            }
            value
        })
        .map(Text)
        .map_err(serde::de::Error::custom)
    }
}

/// Replaces `${env:NAME}` and `${env:NAME:-default}`; `$${` stays a literal `${`.
pub fn substitute_env(
    raw: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if !raw.contains("${") {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let body_start = pos + 2;
        let Some(end) = rest[body_start..].find('}') else {
            return Err(format!(
                "unterminated `${{` in `{raw}`; expected `${{env:NAME}}` (write `$${{` for a literal `${{`)"
            ));
        };
        let body = &rest[body_start..body_start + end];
        let Some(reference) = body.strip_prefix("env:") else {
            return Err(format!(
                "unknown reference `${{{body}}}`; expected `${{env:NAME}}` or `${{env:NAME:-default}}` (write `$${{` for a literal `${{`)"
            ));
        };
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`{name}` is not a valid environment variable name in `${{{body}}}`"
            ));
        }
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set; set it, or give a default with `${{env:{name}:-value}}`"
                ));
            }
        }
        rest = &rest[body_start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_owned())
    }

    #[test]
    fn substitutes_set_and_default_values() {
        assert_eq!(
            substitute_env("a ${env:TOKEN} b", env).unwrap(),
            "a s3cret b"
        );
        assert_eq!(substitute_env("${env:NOPE:-x}", env).unwrap(), "x");
        assert_eq!(substitute_env("${env:NOPE:-}", env).unwrap(), "");
        assert_eq!(
            substitute_env("$${env:TOKEN}", env).unwrap(),
            "${env:TOKEN}"
        );
        assert_eq!(substitute_env("plain", env).unwrap(), "plain");
    }

    #[test]
    fn missing_variable_names_it_and_says_what_to_do() {
        let err = substitute_env("${env:NOPE}", env).unwrap_err();
        assert!(err.contains("`NOPE` is not set"), "{err}");
        assert!(err.contains(":-value"), "{err}");
        assert!(substitute_env("${oops}", env).is_err());
        assert!(substitute_env("${env:A", env).is_err());
    }
}
