//! The `http` sink: one JSON request per message; retries are the engine's.

use async_trait::async_trait;
use sluice_engine::HttpCall;
use sluice_engine::{BuildContext, FlowError, Outgoing, Sink};
use sluice_flow::{Diagnostic, HttpSinkConfig, OutputFormat, Span};

/// Sends each payload as a JSON request.
pub struct HttpSink {
    call: HttpCall,
    method: &'static str,
}

impl HttpSink {
    /// Compiles the URL and header templates.
    pub fn new(config: &HttpSinkConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let headers: Vec<(String, String)> = config
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.value.0.clone()))
            .collect();
        let call = HttpCall::new(
            config.method,
            config.url.value.as_str(),
            &headers,
            config.timeout.0,
        )
        .map_err(|e| {
            let at = if e.which == "url" {
                &config.url
            } else {
                &config.headers[&e.which]
            };
            let span = sluice_flow::diagnostic::position_in_scalar(
                &cx.flow.source,
                Span::of(at),
                0,
                e.error.offset,
            );
            cx.flow.diagnostic(span, e.error.message).with_help(e.help)
        })?;
        Ok(HttpSink {
            call,
            method: config.method.as_str(),
        })
    }
}

#[async_trait]
impl Sink for HttpSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let body = crate::file::serialize(OutputFormat::Json, None, &mut out.payload)?;
        self.call
            .send(&mut out.payload, &out.meta, &[], Some(body))
            .await?;
        Ok(())
    }

    fn target(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(format!(
            "{} {}",
            self.method,
            self.call.shown_url(&mut out.payload, &out.meta)?
        ))
    }
}
