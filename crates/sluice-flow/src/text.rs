//! String values with `${env:NAME}` / `${env:NAME:-default}` substituted at load time.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::ops::Deref;

/// Why `${…}` in a value could not be substituted. Loading reports it at the value's line and
/// column; none of them prints a variable's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A `${` without its `}`.
    #[error(
        "unterminated `${{` in `{0}`; expected `${{env:NAME}}` (write `$${{` for a literal `${{`)"
    )]
    Unterminated(String),
    /// A reference of another kind than `env:`.
    #[error(
        "unknown reference `${{{0}}}`; expected `${{env:NAME}}` or `${{env:NAME:-default}}` (write `$${{` for a literal `${{`)"
    )]
    UnknownReference(String),
    /// A variable name with other characters than letters, digits and `_`.
    #[error("`{name}` is not a valid environment variable name in `${{{reference}}}`")]
    InvalidName {
        /// The name as written.
        name: String,
        /// The whole reference, without `${` and `}`.
        reference: String,
    },
    /// A variable that is not set and has no default.
    #[error(
        "environment variable `{0}` is not set; set it, or give a default with `${{env:{0}:-value}}`"
    )]
    NotSet(String),
}

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
) -> Result<String, EnvError> {
    if !raw.contains("${") {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    substitute_pieces(raw, lookup, |_, piece, _| out.push_str(piece))?;
    Ok(out)
}

/// The characters of `raw` once substituted with the process environment (as loading does),
/// each with the character offset in `raw` it comes from; the characters of a variable's
/// value all come from the `$` of its reference. Diagnostics use it to map a position in a
/// value back to the flow text. Text with an invalid reference maps to itself.
pub fn value_origins(raw: &str) -> Vec<(char, usize)> {
    let mut out = Vec::with_capacity(raw.len());
    let substituted = substitute_pieces(
        raw,
        |name| std::env::var(name).ok(),
        |at, piece, literal| {
            let first = raw[..at].chars().count();
            for (i, c) in piece.chars().enumerate() {
                out.push((c, if literal { first + i } else { first }));
            }
        },
    );
    match substituted {
        Ok(()) => out,
        Err(_) => raw.chars().enumerate().map(|(i, c)| (c, i)).collect(),
    }
}

/// Walks `raw` and hands each piece of the substituted text to `emit` with the byte offset
/// in `raw` where it starts and whether it is copied from there character for character
/// (`false` for a variable's value or default).
fn substitute_pieces(
    raw: &str,
    lookup: impl Fn(&str) -> Option<String>,
    mut emit: impl FnMut(usize, &str, bool),
) -> Result<(), EnvError> {
    let mut base = 0;
    let mut rest = raw;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            emit(base, &rest[..pos - 1], true);
            emit(base + pos, "${", true);
            rest = &rest[pos + 2..];
            base += pos + 2;
            continue;
        }
        emit(base, &rest[..pos], true);
        let body_start = pos + 2;
        let Some(end) = rest[body_start..].find('}') else {
            return Err(EnvError::Unterminated(raw.to_owned()));
        };
        let body = &rest[body_start..body_start + end];
        let Some(reference) = body.strip_prefix("env:") else {
            return Err(EnvError::UnknownReference(body.to_owned()));
        };
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(EnvError::InvalidName {
                name: name.to_owned(),
                reference: body.to_owned(),
            });
        }
        match (lookup(name), default) {
            (Some(value), _) => emit(base + pos, &value, false),
            (None, Some(default)) => emit(base + pos, default, false),
            (None, None) => {
                return Err(EnvError::NotSet(name.to_owned()));
            }
        }
        rest = &rest[body_start + end + 1..];
        base += body_start + end + 1;
    }
    emit(base, rest, true);
    Ok(())
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
        let err = substitute_env("${env:NOPE}", env).unwrap_err().to_string();
        assert_eq!(
            err,
            "environment variable `NOPE` is not set; set it, or give a default with `${env:NOPE:-value}`"
        );
        assert_eq!(
            substitute_env("${oops}", env).unwrap_err().to_string(),
            "unknown reference `${oops}`; expected `${env:NAME}` or `${env:NAME:-default}` (write `$${` for a literal `${`)"
        );
        assert_eq!(
            substitute_env("${env:A", env).unwrap_err().to_string(),
            "unterminated `${` in `${env:A`; expected `${env:NAME}` (write `$${` for a literal `${`)"
        );
        assert_eq!(
            substitute_env("${env:A-B}", env),
            Err(EnvError::InvalidName {
                name: "A-B".to_owned(),
                reference: "env:A-B".to_owned()
            })
        );
    }

    #[test]
    fn origins_point_at_the_raw_text() {
        let origins =
            |raw: &str| -> Vec<usize> { value_origins(raw).iter().map(|o| o.1).collect() };
        assert_eq!(origins("ab"), [0, 1]);
        // `x` is the default of an unset variable: it comes from the reference at 1.
        assert_eq!(
            value_origins("a${env:SLUICE_SURELY_UNSET_VAR:-x}b"),
            [('a', 0), ('x', 1), ('b', 34)]
        );
        assert_eq!(origins("$${é}"), [1, 2, 3, 4]);
        assert_eq!(origins("${oops}"), [0, 1, 2, 3, 4, 5, 6]);
    }
}
