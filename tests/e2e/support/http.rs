//! The tests' HTTP client: reqwest's blocking client, one request per connection (each sent
//! with `Connection: close`), no proxy, no redirects followed, bounded by 30 s.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::process::Ports;
use super::secs;

#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the response) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {} {}",
                self.status,
                self.text()
            )
        })
    }
}

impl std::fmt::Display for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (k, v) in &self.headers {
            write!(f, "\n{k}: {v}")?;
        }
        write!(f, "\n\n{}", self.text())
    }
}

/// One client for every test thread: it has no state that a test could leave behind (no
/// pooled connections, no cookies).
fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // reqwest is built without a rustls provider of its own (the workspace's Cargo.toml).
        sluice_engine::use_ring();
        reqwest::blocking::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .expect("build the tests' HTTP client")
    })
}

/// One request with a deadline; transport errors (refused, reset, closed early, timeout) are
/// returned as text.
pub fn try_http_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| format!("bad method {method:?}: {e}"))?;
    let mut request = client()
        .request(method, format!("http://{addr}{path}"))
        .timeout(timeout)
        .header("Connection", "close");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if let Some(body) = body {
        request = request.body(body.to_vec());
    }
    let response = request.send().map_err(|e| error_text(&e))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.bytes().map_err(|e| error_text(&e))?.to_vec();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// The error with its causes: reqwest's own text alone says only "error sending request".
fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// One request; errors as text. Bounded by 30 s.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, String> {
    try_http_within(addr, method, path, headers, body, secs(30))
}

/// One request; panics on a transport error.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    try_http(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(addr, "GET", path, &[], None)
}

/// POSTs `value` as `application/json` with extra headers.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    value: &Value,
) -> HttpResponse {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http(
        addr,
        "POST",
        path,
        &all,
        Some(&serde_json::to_vec(value).unwrap()),
    )
}

/// GET on the admin server with an optional bearer token.
pub fn admin_get(ports: Ports, path: &str, token: Option<&str>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    http(ports.admin, "GET", path, &headers, None)
}

/// `GET <admin>/api/flows/<name>` as JSON (panics unless 200).
pub fn admin_flow(ports: Ports, name: &str) -> Value {
    let r = admin_get(ports, &format!("/api/flows/{name}"), None);
    assert_eq!(r.status, 200, "GET /api/flows/{name}:\n{r}");
    r.json()
}

/// [`admin_flow`] with the admin token.
pub fn admin_flow_with(ports: Ports, name: &str, token: &str) -> Value {
    let r = admin_get(ports, &format!("/api/flows/{name}"), Some(token));
    assert_eq!(r.status, 200, "GET /api/flows/{name}:\n{r}");
    r.json()
}
