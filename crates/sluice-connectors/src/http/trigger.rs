//! The `http` trigger: registers a route on the shared listener while it runs.

use super::auth::Auth;
use super::route::Pattern;
use super::server::{HttpHub, RouteEntry};
use async_trait::async_trait;
use axum::http::Method;
use sluice_engine::{BuildContext, Inlet, Trigger};
use sluice_flow::{Diagnostic, HttpTriggerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Request-reply messages from one route.
pub struct HttpTrigger {
    hub: Arc<HttpHub>,
    method: Method,
    pattern: Pattern,
    max_body: u64,
    timeout: Duration,
    auth: Option<Auth>,
    xml: Arc<sluice_xml::ReadOptions>,
}

impl HttpTrigger {
    /// Checks the route and the auth settings.
    pub fn new(
        hub: Arc<HttpHub>,
        config: &HttpTriggerConfig,
        cx: &BuildContext<'_>,
    ) -> Result<Self, Diagnostic> {
        let pattern = Pattern::parse(config.path.value.as_str()).map_err(|e| {
            cx.diagnostic(&config.path, e.to_string())
                .with_help("a path like `/orders` or `/orders/{id}`")
        })?;
        let auth = match &config.auth {
            Some(auth) => Some(Auth::from_config(&auth.value).map_err(|e| {
                cx.diagnostic(auth, e.to_string())
                    .with_help("e.g. `auth: { bearer: \"${env:ORDERS_TOKEN}\" }`")
            })?),
            None => None,
        };
        if let Some(record) = &config.xml.record {
            return Err(cx
                .diagnostic(
                    record,
                    "`xml.record` splits a file into messages; a request is one message",
                )
                .with_help("remove `record`; `xml.arrays` applies to request bodies"));
        }
        let xml = Arc::new(sluice_xml::ReadOptions {
            arrays: config.xml.arrays.clone(),
            ..sluice_xml::ReadOptions::default()
        });
        Ok(HttpTrigger {
            hub,
            method: Method::from_bytes(config.method.as_str().as_bytes()).unwrap_or(Method::POST),
            pattern,
            max_body: config.max_body.0,
            timeout: config.timeout.0,
            auth,
            xml,
        })
    }

    /// The exclusive resource: method and path shape.
    pub fn claim(config: &HttpTriggerConfig) -> Option<String> {
        Pattern::parse(config.path.value.as_str())
            .ok()
            .map(|p| format!("http {} {}", config.method.as_str(), p.shape()))
    }
}

#[async_trait]
impl Trigger for HttpTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let entry = RouteEntry {
            id: 0,
            method: self.method.clone(),
            pattern: self.pattern.clone(),
            max_body: self.max_body,
            timeout: self.timeout,
            auth: self.auth.clone(),
            xml: self.xml.clone(),
            inlet: inlet.clone(),
        };
        let id = match self.hub.add(entry).await {
            Ok(id) => id,
            Err(reason) => {
                inlet.set_unhealthy(reason.to_string());
                return;
            }
        };
        stop.cancelled().await;
        self.hub.remove(id);
    }

    fn can_overlap(&self) -> bool {
        true
    }
}
