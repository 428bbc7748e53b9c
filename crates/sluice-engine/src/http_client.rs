//! Outgoing HTTP for the `http` sink and the `enrich` step: one shared client (rustls),
//! templated URLs and headers, and the mapping of answers to typed errors.
//!
//! Everything that prints a URL or an error from here redacts it (`secrets::redact`): the
//! URL may carry `${env:…}` credentials as userinfo or in the query.

use crate::error::{ErrorKind, FlowError};
use crate::expr::{ExprError, Template};
use crate::http_url::{UrlTemplate, same_origin};
use crate::message::Ids;
use crate::message::{Meta, Payload};
use sluice_flow::{HttpMethod, secrets};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Redirects followed per request, all on the request's own scheme, host and port.
pub const MAX_REDIRECTS: usize = 5;

static CLIENT: LazyLock<Result<reqwest::Client, String>> = LazyLock::new(|| {
    use_ring();
    reqwest::Client::builder()
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::custom(redirect_policy))
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {e}"))
});

/// Makes ring the process's default rustls provider unless one is already installed, for
/// clients that take the process default: reqwest (built without a provider of its own,
/// `rustls-no-provider` in Cargo.toml) and redis. Every other TLS client of sluice names
/// ring explicitly. The one place that installs it.
pub fn use_ring() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one meanwhile; either is ring, so losing the race is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Follows a redirect only to the scheme, host and port of the first request. reqwest on
/// its own drops `Authorization` and `Cookie` on a cross-host redirect but forwards every
/// other header, and an API key from `${env:…}` is as secret as a bearer token: so nothing
/// is sent to a host the flow file does not name.
fn redirect_policy(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.follow();
    };
    if !same_origin(first, attempt.url()) {
        let to = secrets::redacted(attempt.url().as_str());
        return attempt.error(format!(
            "the server redirected to another host ({to}); redirects are followed only on the same scheme, host and port, so that the request's headers never reach another host"
        ));
    }
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
    }
    attempt.follow()
}

/// A prepared request: method, URL and header templates, timeout.
pub struct HttpCall {
    method: reqwest::Method,
    url: UrlTemplate,
    headers: Vec<(String, Template)>,
    timeout: Duration,
}

/// Why a request could not be prepared: which part (`url` or a header name), the error at
/// a character offset in it, and what to do.
#[derive(Debug)]
pub struct CallError {
    /// `url`, or the header's name.
    pub which: String,
    /// The error and its offset.
    pub error: ExprError,
    /// A hint for the user.
    pub help: &'static str,
}

/// The answer to a successful call.
pub struct HttpAnswer {
    /// The status (2xx).
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpCall {
    /// Compiles the URL and header templates; errors name which one and the offset.
    pub fn new(
        method: HttpMethod,
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Self, CallError> {
        let url_template = UrlTemplate::compile(url).map_err(|e| CallError {
            which: "url".to_owned(),
            error: e.error,
            help: e.help,
        })?;
        let mut compiled = Vec::new();
        for (name, value) in headers {
            let template = Template::compile(value).map_err(|error| CallError {
                which: name.clone(),
                error,
                help: "a header value is text with `{{ jmespath }}` holes",
            })?;
            compiled.push((name.clone(), template));
        }
        let method = match method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        };
        Ok(HttpCall {
            method,
            url: url_template,
            headers: compiled,
            timeout,
        })
    }

    /// The rendered URL, to send; never print it without [`secrets::redact`].
    pub fn url(&self, payload: &mut Payload, meta: &Arc<Meta>) -> Result<String, FlowError> {
        self.url
            .render(payload, meta)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, format!("url: {e}")))
    }

    /// The rendered URL as it may be shown (`sluice exec`, errors): userinfo and secrets
    /// masked.
    pub fn shown_url(&self, payload: &mut Payload, meta: &Arc<Meta>) -> Result<String, FlowError> {
        Ok(secrets::redacted(&self.url(payload, meta)?))
    }

    /// How long the request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request. Connection errors, 429 and 5xx are retryable `sink` errors (with
    /// `Retry-After`), a timeout is a `timeout` error, other non-2xx answers are permanent.
    pub async fn send(
        &self,
        payload: &mut Payload,
        meta: &Arc<Meta>,
        query: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<HttpAnswer, FlowError> {
        let client = CLIENT
            .as_ref()
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, e.clone()))?;
        let url = self.url(payload, meta)?;
        let shown = secrets::redacted(&url);
        let mut request = client
            .request(self.method.clone(), &url)
            .timeout(self.timeout);
        if !query.is_empty() {
            request = request.query(query);
        }
        for (name, template) in &self.headers {
            let value = template.render(payload, meta).map_err(|e| {
                FlowError::permanent(ErrorKind::Sink, format!("header `{name}`: {e}"))
            })?;
            request = request.header(name.as_str(), value);
        }
        request = request.header("x-correlation-id", meta.correlation());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&shown, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&shown, e))?
            .to_vec();
        if status.is_success() {
            return Ok(HttpAnswer {
                status: status.as_u16(),
                body,
            });
        }
        let excerpt: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        let message = format!("{} {shown} answered {status}: {excerpt}", self.method);
        let transient = status.as_u16() == 429 || status.is_server_error();
        let mut error = if transient {
            FlowError::new(ErrorKind::Sink, message)
        } else {
            FlowError::permanent(ErrorKind::Sink, message)
        };
        error.retry_after = retry_after.filter(|_| transient);
        error.upstream_status = Some(status.as_u16());
        Err(error)
    }
}

/// A typed error for a failed request; `url` is already redacted. reqwest's own rendering
/// includes the full URL (userinfo and query), so it is dropped and the causes are shown.
fn transport_error(url: &str, e: reqwest::Error) -> FlowError {
    let (timeout, connect, redirect) = (e.is_timeout(), e.is_connect(), e.is_redirect());
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    if timeout {
        FlowError::new(ErrorKind::Timeout, format!("{url} did not answer in time"))
    } else if connect {
        FlowError::new(
            ErrorKind::Sink,
            format!("cannot connect to {url}: {reason}"),
        )
    } else if redirect {
        // Another attempt gets the same redirect.
        FlowError::permanent(
            ErrorKind::Sink,
            format!("request to {url} failed: {reason}"),
        )
    } else {
        FlowError::new(
            ErrorKind::Sink,
            format!("request to {url} failed: {reason}"),
        )
    }
}
