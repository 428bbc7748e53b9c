//! Outgoing HTTP for the `http` sink and the `enrich` step: one shared client (rustls),
//! templated URLs and headers, and the mapping of answers to typed errors.

use crate::error::{ErrorKind, FlowError};
use crate::expr::{ExprError, Template};
use crate::message::{Meta, Payload};
use sluice_flow::HttpMethod;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

static CLIENT: LazyLock<Result<reqwest::Client, String>> = LazyLock::new(|| {
    reqwest::Client::builder()
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {e}"))
});

/// A prepared request: method, URL and header templates, timeout.
pub struct HttpCall {
    method: reqwest::Method,
    url: Template,
    headers: Vec<(String, Template)>,
    timeout: Duration,
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
    ) -> Result<Self, (String, ExprError)> {
        let url_template = Template::compile(url).map_err(|e| ("url".to_owned(), e))?;
        let scheme_ok = ["http://", "https://", "{{", "${"]
            .iter()
            .any(|start| url.trim_start().starts_with(start));
        if !scheme_ok {
            return Err((
                "url".to_owned(),
                ExprError {
                    offset: 0,
                    message: format!("`{url}` is not an http:// or https:// URL"),
                },
            ));
        }
        let mut compiled = Vec::new();
        for (name, value) in headers {
            compiled.push((
                name.clone(),
                Template::compile(value).map_err(|e| (name.clone(), e))?,
            ));
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

    /// The rendered URL (for `sluice exec` and errors).
    pub fn url(&self, payload: &mut Payload, meta: &Arc<Meta>) -> Result<String, FlowError> {
        self.url
            .render(payload, meta)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, format!("url: {e}")))
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
        let correlation = meta
            .get("correlation_id")
            .or_else(|| meta.get("message_id"));
        if let Some(id) = correlation {
            request = request.header("x-correlation-id", id.as_str());
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&url, &e))?;
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
            .map_err(|e| transport_error(&url, &e))?
            .to_vec();
        if status.is_success() {
            return Ok(HttpAnswer {
                status: status.as_u16(),
                body,
            });
        }
        let excerpt: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        let message = format!("{} {url} answered {status}: {excerpt}", self.method);
        let transient = status.as_u16() == 429 || status.is_server_error();
        let mut error = if transient {
            FlowError::new(ErrorKind::Sink, message)
        } else {
            FlowError::permanent(ErrorKind::Sink, message)
        };
        error.retry_after = retry_after.filter(|_| transient);
        Err(error)
    }
}

fn transport_error(url: &str, e: &reqwest::Error) -> FlowError {
    if e.is_timeout() {
        FlowError::new(ErrorKind::Timeout, format!("{url} did not answer in time"))
    } else if e.is_connect() {
        FlowError::new(ErrorKind::Sink, format!("cannot connect to {url}: {e}"))
    } else {
        FlowError::new(ErrorKind::Sink, format!("request to {url} failed: {e}"))
    }
}
