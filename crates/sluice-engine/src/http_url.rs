//! URL templates for the `http` sink and the `enrich` step, safe against the payload.
//!
//! The scheme, host and port are fixed when the flow loads: a `{{ }}` hole may only sit in
//! the path, the query or the fragment, so no payload value can send the request (and the
//! secret headers configured for it) anywhere else. Every rendered value is percent-encoded
//! (all but RFC 3986's unreserved characters, `/` included), so it stays inside its path
//! segment or query value, and a value that would make a path segment `.` or `..` — which
//! URL parsers resolve even when written `%2e%2e` — is refused.

use crate::expr::{ExprError, Template};
use crate::message::{Meta, Payload};
use sluice_flow::secrets;
use std::sync::Arc;

/// What to write instead of a host template; shown with the load error.
pub const FIXED_HOST_HELP: &str = "write the scheme, host and port as fixed text, e.g. `https://api.example.com/orders/{{id}}`; to choose between hosts, give each its own sink and pick one with a `route` step";

/// Which part of the URL a hole fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Path,
    Query,
    Fragment,
}

/// A compiled URL template.
pub struct UrlTemplate {
    template: Template,
    /// Per hole, the part of the URL it fills.
    places: Vec<Place>,
    /// Byte length of the literal `scheme://authority` that every rendering starts with.
    path_start: usize,
}

/// A URL template that cannot be used, with the character offset into the URL text.
#[derive(Debug)]
pub struct UrlError {
    /// What is wrong, and where.
    pub error: ExprError,
    /// What to do about it.
    pub help: &'static str,
}

const URL_HELP: &str = "an http:// or https:// URL; `{{ jmespath }}` holes are allowed in the path and query, e.g. `http://127.0.0.1:9000/customers/{{customer.id}}`";

impl UrlTemplate {
    /// Compiles `text`; a hole in the scheme, host or port is an error.
    pub fn compile(text: &str) -> Result<UrlTemplate, UrlError> {
        let fail = |offset: usize, message: String, help| UrlError {
            error: ExprError { offset, message },
            help,
        };
        let template = Template::compile(text).map_err(|error| UrlError {
            error,
            help: URL_HELP,
        })?;
        let mut prefix = String::new();
        for piece in template.pieces() {
            match piece {
                Some(literal) => prefix.push_str(literal),
                None => break,
            }
        }
        let has_holes = template.pieces().any(|p| p.is_none());
        let lower = prefix.to_ascii_lowercase();
        let Some(scheme_len) = ["http://", "https://"]
            .iter()
            .find(|s| lower.starts_with(*s))
            .map(|s| s.len())
        else {
            let message = if prefix.is_empty() || (has_holes && !lower.contains("://")) {
                "the URL starts with a template hole: a template may not produce the scheme, host or port".to_owned()
            } else {
                format!(
                    "`{}` is not an http:// or https:// URL",
                    secrets::redact(text)
                )
            };
            let help = if has_holes && !lower.contains("://") {
                FIXED_HOST_HELP
            } else {
                URL_HELP
            };
            return Err(fail(0, message, help));
        };
        let authority_end = prefix[scheme_len..]
            .find(['/', '?', '#'])
            .map(|i| scheme_len + i);
        let path_start = match authority_end {
            Some(end) => end,
            None if has_holes => {
                return Err(fail(
                    prefix.chars().count(),
                    "a template may not produce the host or port of a URL: this `{{ }}` would let a payload value choose where the request and its headers go".to_owned(),
                    FIXED_HOST_HELP,
                ));
            }
            None => prefix.len(),
        };
        // Checked, not kept: every rendering starts with this fixed origin, so a redirect is
        // compared with the first request's URL (`same_origin`).
        reqwest::Url::parse(&prefix[..path_start])
            .ok()
            .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
            .ok_or_else(|| {
                fail(
                    0,
                    format!(
                        "`{}` does not start with a valid scheme, host and port",
                        secrets::redact(&prefix[..path_start])
                    ),
                    URL_HELP,
                )
            })?;
        let mut places = Vec::new();
        let mut before = String::new();
        for piece in template.pieces() {
            match piece {
                Some(literal) => before.push_str(literal),
                None if before.contains('#') => places.push(Place::Fragment),
                None if before.contains('?') => places.push(Place::Query),
                None => places.push(Place::Path),
            }
        }
        Ok(UrlTemplate {
            template,
            places,
            path_start,
        })
    }

    /// Renders the URL with every value percent-encoded for its place.
    pub fn render(&self, payload: &mut Payload, meta: &Arc<Meta>) -> Result<String, String> {
        // Byte ranges of the values rendered into the path, to find dot segments they made.
        let mut in_path: Vec<(usize, usize)> = Vec::new();
        let url = self.template.render_with(payload, meta, |n, value, out| {
            let start = out.len();
            encode_into(value, out);
            if self.places.get(n) == Some(&Place::Path) {
                in_path.push((start, out.len()));
            }
        })?;
        let path_end = url[self.path_start..]
            .find(['?', '#'])
            .map_or(url.len(), |i| self.path_start + i);
        let mut offset = self.path_start;
        for segment in url[self.path_start..path_end].split('/') {
            let (start, end) = (offset, offset + segment.len());
            offset = end + 1;
            let from_payload = in_path.iter().any(|&(s, e)| s < end && e > start);
            if from_payload && is_dot_segment(segment) {
                return Err(format!(
                    "a value rendered into the URL path makes the segment `{segment}`, which would move the request to another path; `.` and `..` are not allowed as path values"
                ));
            }
        }
        Ok(url)
    }
}

/// `.` or `..`, also when a dot is written `%2e` (URL parsers resolve both).
fn is_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    let dots = lower.replace("%2e", ".");
    dots == "." || dots == ".."
}

/// Appends `value` percent-encoded: every byte except RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`, so `/`, `?`, `#`, `&`, `=` and `%` cannot change
/// the structure of the URL.
fn encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in value.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0xf) as usize] as char);
        }
    }
}

/// Whether `next` is on the same scheme, host and port as `origin` (redirects elsewhere are
/// not followed, so the headers of a request never reach another host).
pub fn same_origin(origin: &reqwest::Url, next: &reqwest::Url) -> bool {
    origin.scheme() == next.scheme()
        && origin.host_str() == next.host_str()
        && origin.port_or_known_default() == next.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, payload: serde_json::Value) -> Result<String, String> {
        let t = UrlTemplate::compile(template).map_err(|e| e.error.message)?;
        t.render(&mut Payload::from_json(payload), &Arc::new(Meta::new()))
    }

    #[test]
    fn values_are_encoded_for_their_place() {
        let url = "http://h:1/api/{{a}}/x?q={{b}}#{{c}}";
        let out = render(url, json!({"a": "../admin", "b": "x&admin=1#", "c": "a b"})).unwrap();
        assert_eq!(out, "http://h:1/api/..%2Fadmin/x?q=x%26admin%3D1%23#a%20b");
        let out = render(url, json!({"a": "%2e%2e", "b": "é", "c": 1})).unwrap();
        assert_eq!(out, "http://h:1/api/%252e%252e/x?q=%C3%A9#1");
    }

    #[test]
    fn dot_segments_from_the_payload_are_refused() {
        for value in ["..", ".", ""] {
            let out = render("http://h/api/{{a}}/x", json!({ "a": value }));
            if value.is_empty() {
                assert_eq!(out.unwrap(), "http://h/api//x");
            } else {
                assert!(out.unwrap_err().contains("not allowed"), "{value}");
            }
        }
        let out = render("http://h/api/{{a}}{{b}}", json!({"a": ".", "b": "."}));
        assert!(out.is_err());
        assert_eq!(
            render("http://h/api/v{{a}}", json!({"a": ".."})).unwrap(),
            "http://h/api/v.."
        );
    }

    #[test]
    fn holes_in_scheme_host_or_port_are_load_errors() {
        for url in [
            "{{target}}",
            "http://{{host}}/x",
            "http://127.0.0.1:{{port}}/x",
            "http://api.example.com{{path}}",
            "http://user:{{p}}@h/x",
            "{{scheme}}://h/x",
        ] {
            let err = UrlTemplate::compile(url)
                .err()
                .unwrap_or_else(|| panic!("{url}"));
            assert_eq!(err.help, FIXED_HOST_HELP, "{url}: {}", err.error.message);
        }
        assert!(UrlTemplate::compile("ftp://h/x").is_err());
        assert!(UrlTemplate::compile("http://h:99999/x").is_err());
        let ok = UrlTemplate::compile("HTTPS://h:8443?id={{id}}").unwrap();
        let mut payload = Payload::from_json(serde_json::json!({"id": "a b"}));
        let url = ok.render(&mut payload, &Arc::new(Meta::new())).unwrap();
        assert!(url.starts_with("HTTPS://h:8443?id=a%20b"), "{url}");
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = reqwest::Url::parse("http://h:80/x").unwrap();
        assert!(same_origin(&a, &reqwest::Url::parse("http://h/y").unwrap()));
        assert!(!same_origin(
            &a,
            &reqwest::Url::parse("http://h:81/x").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &reqwest::Url::parse("https://h/x").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &reqwest::Url::parse("http://g/x").unwrap()
        ));
    }
}
