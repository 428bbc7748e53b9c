//! A client of the admin server of a running `sluice run`, for `sluice dlq` and `sluice tap`.

use crate::cli::Remote;
use anyhow::Context;
use serde_json::Value;
use std::time::Duration;

/// How long one admin request may take (a replay of many entries takes a while).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The admin server, its token and an HTTP client.
pub struct Admin {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Admin {
    /// The client for `remote`.
    pub fn new(remote: &Remote, streaming: bool) -> anyhow::Result<Admin> {
        sluice_engine::use_ring();
        let base = if remote.admin.contains("://") {
            remote.admin.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", remote.admin)
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        // A stream is open as long as the user watches it.
        if !streaming {
            builder = builder.timeout(REQUEST_TIMEOUT);
        }
        let client = builder.build().context("cannot make an HTTP client")?;
        Ok(Admin {
            base,
            token: remote.admin_token.clone(),
            client,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    /// `GET path` → its JSON; an error answer becomes the error's message.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.send(self.request(reqwest::Method::GET, path)).await?;
        json_of(response).await
    }

    /// `POST path` with a JSON body → its JSON.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string());
        json_of(self.send(request).await?).await
    }

    /// Opens a streaming `GET` (server-sent events).
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let request = self
            .request(reqwest::Method::GET, path)
            .header("accept", "text/event-stream");
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(answer_error(response).await);
        }
        Ok(response)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the admin server at {}: {e}; is `sluice run` running there? \
                 (pass --admin HOST:PORT, env SLUICE_ADMIN)",
                self.base
            )
        })
    }
}

async fn json_of(response: reqwest::Response) -> anyhow::Result<Value> {
    if !response.status().is_success() {
        return Err(answer_error(response).await);
    }
    let bytes = response.bytes().await.context("the answer broke off")?;
    serde_json::from_slice(&bytes).context("the admin server answered something that is not JSON")
}

async fn answer_error(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let body: Value = response
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let message = body["error"]["message"]
        .as_str()
        .map_or_else(|| status.to_string(), str::to_owned);
    let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
        " (pass --admin-token TOKEN, env SLUICE_ADMIN_TOKEN)"
    } else {
        ""
    };
    anyhow::anyhow!(
        "the admin server answered {}: {message}{hint}",
        status.as_u16()
    )
}

/// Runs `work` on a small runtime of its own (the command is a short-lived client).
pub fn block_on<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(work)
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
