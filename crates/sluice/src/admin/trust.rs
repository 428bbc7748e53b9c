//! Who may talk to the admin server, decided before any handler runs.
//!
//! A browser on the operator's machine can reach the admin address too, on behalf of any web
//! page it shows. Three checks keep such pages out (see "Admin server threat model" in
//! docs/http-and-operations.md):
//! - the `Host` must be the admin address, `localhost` on a loopback address, or a name given
//!   with `--admin-host`: a DNS-rebound name of another site is refused (421);
//! - a request that changes something (any method but GET and HEAD) must be JSON and come from
//!   no page or from the admin server's own origin: a cross-site form or `fetch` is refused
//!   (403 for the origin, 415 for the content type; a browser cannot send JSON cross-site
//!   without a preflight, which is refused as well);
//! - with `--admin-token`, every endpoint but `/healthz` and `/readyz` needs it (401): probes
//!   cannot send one.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Endpoints that answer without the admin token: orchestrators' probes cannot send one.
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

/// The admin server's own address, the extra names it answers to, and its token.
pub struct Trust {
    bound: SocketAddr,
    hosts: Vec<String>,
    token: Option<String>,
}

impl Trust {
    /// `hosts` are bare names, lower-cased (as `--admin-host` parses them).
    pub fn new(bound: SocketAddr, hosts: Vec<String>, token: Option<String>) -> Arc<Trust> {
        Arc::new(Trust {
            bound,
            hosts,
            token,
        })
    }

    /// Whether a request's host (without port) addresses this server.
    fn host_allowed(&self, host: &str) -> bool {
        let bound = self.bound.ip();
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            // An IP address cannot be rebound to another site: it is the admin address when it
            // is the bound one, or any local one when bound to all interfaces.
            let ip: IpAddr = ip;
            return bound.is_unspecified()
                || ip == bound
                || (ip.is_loopback() && bound.is_loopback());
        }
        if host == "localhost" {
            return bound.is_loopback() || bound.is_unspecified();
        }
        self.hosts.iter().any(|h| h == host)
    }

    /// The refusal for a request that may not pass, if any.
    fn refusal(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        let authority = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        // A browser always sends `Host`; a request without one (HTTP/1.0 tools) cannot carry a
        // rebound name.
        if let Some(authority) = authority {
            let host = split_authority(authority).0;
            if !self.host_allowed(&host) {
                return Some(refuse(
                    StatusCode::MISDIRECTED_REQUEST,
                    "host",
                    format!(
                        "the admin server does not answer to host `{host}`; it answers to its \
                         own address ({}), `localhost` on a loopback address, and the names \
                         given with --admin-host NAME (repeatable; env SLUICE_ADMIN_HOSTS, \
                         comma-separated): start sluice with --admin-host {host} if that name \
                         is yours",
                        self.bound
                    ),
                ));
            }
        }
        if !matches!(*method, Method::GET | Method::HEAD) {
            if let Some(origin) = headers.get(header::ORIGIN) {
                let origin = origin.to_str().unwrap_or("");
                if !same_origin(origin, authority) {
                    return Some(refuse(
                        StatusCode::FORBIDDEN,
                        "origin",
                        format!(
                            "a request from the web page at `{origin}` may not change anything \
                             on the admin server; send it without an `Origin` header (curl, \
                             scripts) or from the admin server's own pages"
                        ),
                    ));
                }
            }
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            if !is_json(content_type) {
                return Some(refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content_type",
                    format!(
                        "the admin API takes JSON: send `Content-Type: application/json` (got {})",
                        content_type.map_or("none".to_owned(), |c| format!("`{c}`"))
                    ),
                ));
            }
        }
        if let Some(token) = &self.token
            && !OPEN_PATHS.contains(&path)
            && !bearer_matches(headers, token)
        {
            return Some(refuse(
                StatusCode::UNAUTHORIZED,
                "auth",
                "the admin API needs `Authorization: Bearer <token>` (the --admin-token); only \
                 /healthz and /readyz answer without it"
                    .to_owned(),
            ));
        }
        None
    }
}

/// The middleware: refuses what [`Trust`] does not let through.
pub async fn guard(State(trust): State<Arc<Trust>>, request: Request, next: Next) -> Response {
    match trust.refusal(request.method(), request.uri().path(), request.headers()) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// A JSON error answer.
pub fn refuse(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"kind": kind, "message": message}})),
    )
        .into_response()
}

/// `host[:port]` → (lower-cased host without a trailing dot, port). IPv6 keeps its brackets.
fn split_authority(authority: &str) -> (String, Option<u16>) {
    let authority = authority.trim();
    let (host, port) = match authority.rfind(':') {
        // `[::1]` has colons but no port after the bracket.
        Some(i) if !authority[i..].contains(']') => {
            (&authority[..i], authority[i + 1..].parse().ok())
        }
        _ => (authority, None),
    };
    (host.trim_end_matches('.').to_ascii_lowercase(), port)
}

/// Whether `origin` (`scheme://host[:port]`) is the origin of a page served at `authority`
/// (the request's validated `Host`). `null` (sandboxed frames, files) is never the same.
fn same_origin(origin: &str, authority: Option<&str>) -> bool {
    let Some(authority) = authority else {
        return false;
    };
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let (origin_host, origin_port) = split_authority(rest);
    let (host, port) = split_authority(authority);
    origin_host == host && origin_port.unwrap_or(default_port) == port.unwrap_or(default_port)
}

/// `application/json` or `application/<x>+json`, with any parameters.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Compares the bearer token in constant time (for equal lengths).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(bound: &str, hosts: &[&str], token: Option<&str>) -> Arc<Trust> {
        Trust::new(
            bound.parse().unwrap(),
            hosts.iter().map(|h| (*h).to_owned()).collect(),
            token.map(str::to_owned),
        )
    }

    fn status(t: &Trust, method: Method, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        t.refusal(&method, path, &map)
            .map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn hosts_of_the_admin_address_pass_and_others_are_misdirected() {
        let t = trust("127.0.0.1:9850", &["sluice.internal"], None);
        for host in [
            "127.0.0.1:9850",
            "127.0.0.1",
            "127.0.0.1:1234",
            "localhost:9850",
            "LOCALHOST",
            "sluice.internal:9850",
            "Sluice.Internal.",
            "[::1]:9850",
        ] {
            assert_eq!(
                status(&t, Method::GET, "/api/flows", &[("host", host)]),
                200,
                "{host}"
            );
        }
        for host in [
            "evil.example:9850",
            "10.0.0.7:9850",
            "localhost.evil.example",
        ] {
            assert_eq!(
                status(&t, Method::GET, "/api/flows", &[("host", host)]),
                421,
                "{host}"
            );
        }
        let all = trust("0.0.0.0:9850", &[], None);
        assert_eq!(
            status(&all, Method::GET, "/", &[("host", "10.0.0.7:9850")]),
            200
        );
        assert_eq!(
            status(&all, Method::GET, "/", &[("host", "evil.example")]),
            421
        );
        let public = trust("10.0.0.7:9850", &[], None);
        assert_eq!(
            status(&public, Method::GET, "/", &[("host", "localhost")]),
            421
        );
    }

    #[test]
    fn changes_need_json_and_the_same_origin() {
        let t = trust("127.0.0.1:9850", &[], None);
        let host = ("host", "127.0.0.1:9850");
        let json = ("content-type", "application/json; charset=utf-8");
        let post =
            |headers: &[(&str, &str)]| status(&t, Method::POST, "/api/flows/f/messages", headers);
        assert_eq!(post(&[host, json]), 200);
        assert_eq!(
            post(&[host, json, ("origin", "http://127.0.0.1:9850")]),
            200
        );
        assert_eq!(
            post(&[host, ("content-type", "application/problem+json")]),
            200
        );
        assert_eq!(post(&[host, json, ("origin", "https://evil.example")]), 403);
        assert_eq!(
            post(&[host, json, ("origin", "http://127.0.0.1:9851")]),
            403
        );
        assert_eq!(post(&[host, json, ("origin", "null")]), 403);
        assert_eq!(post(&[host, ("content-type", "text/plain")]), 415);
        assert_eq!(post(&[host]), 415);
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert_eq!(post(&[host, form]), 415);
        // Reads are not changes: a foreign origin cannot read the answer without CORS.
        let read = [host, ("origin", "https://evil.example")];
        assert_eq!(status(&t, Method::GET, "/api/flows", &read), 200);
    }

    #[test]
    fn the_token_guards_everything_but_the_probes() {
        let t = trust("127.0.0.1:9850", &[], Some("s3cret"));
        let host = ("host", "127.0.0.1:9850");
        for path in OPEN_PATHS {
            assert_eq!(status(&t, Method::GET, path, &[host]), 200, "{path}");
        }
        for path in [
            "/",
            "/metrics",
            "/api/flows",
            "/api/flows/f",
            "/api/dead-letters",
        ] {
            assert_eq!(status(&t, Method::GET, path, &[host]), 401, "{path}");
            let wrong = ("authorization", "Bearer s3cres");
            assert_eq!(status(&t, Method::GET, path, &[host, wrong]), 401, "{path}");
            let right = ("authorization", "Bearer s3cret");
            assert_eq!(status(&t, Method::GET, path, &[host, right]), 200, "{path}");
        }
    }
}
