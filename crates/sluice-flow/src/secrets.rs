//! Redaction of secrets: every value that a flow file took from the environment
//! (`${env:…}`), and the userinfo of every URL.
//!
//! Values are remembered when a flow (or `sluice.yaml`) is parsed, process-wide, and are
//! never forgotten: a dead letter written by the previous version of a flow may still be
//! shown after the secret was rotated. [`redact`] is the one function that everything which
//! prints text about a flow goes through: error messages and envelopes, diagnostics, and
//! every log line (the log writer applies it too, so library lines are covered).

use std::borrow::Cow;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Environment values shorter than this are not treated as secrets: masking every `1`,
/// `on` or `dev` in every log line would destroy the log, and no credential is that short.
pub const MIN_SECRET_LEN: usize = 4;

/// The remembered secrets, each with the escaped forms in which it can be printed (a JSON
/// log line or a `{:?}` rendering escapes quotes and backslashes), longest first so that a
/// secret containing another is masked as a whole.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers a value taken from the environment so that it is never printed.
pub fn remember(value: &str) {
    if value.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let mut forms = vec![value.to_owned()];
    if let Ok(json) = serde_json::to_string(value) {
        forms.push(json[1..json.len() - 1].to_owned());
    }
    let debug = format!("{value:?}");
    forms.push(debug[1..debug.len() - 1].to_owned());
    let mut all = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for form in forms {
        if !all.contains(&form) {
            all.push(form);
        }
    }
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every remembered secret replaced by `***` and the userinfo of every URL in it
/// (`scheme://user:password@host`) replaced by `***@`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = strip_userinfo(text);
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// The same as [`redact`], as an owned string.
pub fn redacted(text: &str) -> String {
    redact(text).into_owned()
}

/// Replaces the userinfo of every `scheme://userinfo@host` in `text` with `***@`.
fn strip_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(pos) = rest.find("://") {
        let after = pos + 3;
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        // The authority ends at the path, query or fragment, or where the URL ends in
        // running text (whitespace, quotes, brackets).
        let end = rest
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>' | ')' | ']'
                ) || c.is_whitespace()
            })
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        if let Some(at) = authority.rfind('@') {
            if authority[..at] != *MASK {
                changed = true;
            }
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        } else {
            out.push_str(authority);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked_in_running_text() {
        assert_eq!(
            redact("cannot connect to http://bob:pw@127.0.0.1:9/x?y=1: refused"),
            "cannot connect to http://***@127.0.0.1:9/x?y=1: refused"
        );
        assert_eq!(
            redact("`amqp://guest:guest@localhost` and https://h/p"),
            "`amqp://***@localhost` and https://h/p"
        );
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("http://***@h/"), "http://***@h/");
    }

    #[test]
    fn remembered_values_are_masked_in_every_form() {
        remember("tok\"en-1234-secrets");
        let text = r#"a tok"en-1234-secrets b {"t":"tok\"en-1234-secrets"}"#;
        assert_eq!(redact(text), r#"a *** b {"t":"***"}"#);
        remember("ab");
        assert_eq!(redact("ab cd"), "ab cd", "too short to be a secret");
    }
}
