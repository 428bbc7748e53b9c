use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use crate::http_client::HttpCall;
use crate::message::Payload;
use crate::retry::with_retry;
use crate::value::{jmes_to_json, json_to_jmes};
use jmespath::{Rcvar, Variable};
use sluice_flow::RetryConfig;
use sluice_flow::{EnrichConfig, Span};

/// `enrich:` — calls an HTTP endpoint and merges its JSON answer into the payload at a
/// field; failures are `enrich` errors (with the upstream status) or `timeout` errors,
/// retried like sink writes.
pub struct Enrich {
    flow: String,
    call: HttpCall,
    body: Option<Expr>,
    query: Vec<(String, Expr)>,
    into: String,
    retry: RetryConfig,
    /// The step's name or position: what a dry run's mock of it is keyed by.
    key: String,
}

impl Enrich {
    /// An enrich step.
    pub fn new(
        flow: &str,
        call: HttpCall,
        body: Option<Expr>,
        query: Vec<(String, Expr)>,
        into: String,
        retry: RetryConfig,
        key: &str,
    ) -> Self {
        Enrich {
            flow: flow.to_owned(),
            call,
            body,
            query,
            into,
            retry,
            key: key.to_owned(),
        }
    }

    /// In a dry run: the mock's answer (recording the request body it was sent), an error
    /// saying how to mock the step, or `None` with `sluice exec --live` (a real call).
    async fn dry_answer(
        &self,
        probe: Option<crate::probe::Probe>,
        body: &Option<Vec<u8>>,
    ) -> Option<Result<serde_json::Value, FlowError>> {
        let sent = body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(serde_json::Value::Null);
        let Some(probe) = probe else {
            let probe = crate::probe::Probe::new(Default::default(), false, false, true);
            return Some(Err(probe.unmocked(&self.key, "the `enrich` step")));
        };
        let Some(mock) = probe.mock(&self.key) else {
            if probe.live() {
                probe.sent(&self.key, sent);
                return None;
            }
            return Some(Err(probe.unmocked(&self.key, "the `enrich` step")));
        };
        probe.sent(&self.key, sent);
        probe.note_mocked();
        let what = format!("the `enrich` step `{}`", probe.key(&self.key));
        Some(
            mock.answer(&what, ErrorKind::Enrich, Some(self.call.timeout()))
                .await
                .map(Option::unwrap_or_default),
        )
    }

    async fn call(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let data = exec.jmes()?;
        if !data.is_object() {
            return Err(FlowError::new(
                ErrorKind::Transform,
                format!(
                    "`enrich` needs an object payload, but the payload is {}",
                    data.get_type()
                ),
            ));
        }
        let transform = |e: String| FlowError::new(ErrorKind::Transform, e);
        let body = match &self.body {
            Some(expr) => {
                let value = expr.search(data.clone(), &exec.meta).map_err(transform)?;
                Some(
                    serde_json::to_vec(&jmes_to_json(&value))
                        .map_err(|e| transform(e.to_string()))?,
                )
            }
            None => None,
        };
        let mut query = Vec::new();
        for (name, expr) in &self.query {
            let value = expr.search(data.clone(), &exec.meta).map_err(transform)?;
            let text = match &*value {
                Variable::String(s) => s.clone(),
                Variable::Null => continue,
                other => serde_json::to_string(&jmes_to_json(other))
                    .map_err(|e| transform(e.to_string()))?,
            };
            query.push((name.clone(), text));
        }
        let mocked = match exec.dry {
            true => self.dry_answer(exec.probe.clone(), &body).await,
            false => None,
        };
        let response = match mocked {
            Some(answer) => answer?,
            None => {
                let (meta, payload) = (exec.meta.clone(), exec.payload.snapshot());
                self.send(meta, payload, &query, body).await?
            }
        };
        let Some(object) = data.as_object() else {
            return Ok(Control::Continue);
        };
        let mut merged = object.clone();
        merged.insert(self.into.clone(), json_to_jmes(&response));
        exec.payload = Payload::from_jmes(Rcvar::new(Variable::Object(merged)));
        Ok(Control::Continue)
    }
}

/// The HTTP client speaks of sinks; for the caller of a flow an `enrich` failure is an
/// upstream failure (a 502 for an `http` trigger), not a failed delivery of its message.
/// Retryability, the attempts and the upstream status stay as they were.
fn as_enrich_error(mut error: FlowError) -> FlowError {
    if error.kind == ErrorKind::Sink {
        error.kind = ErrorKind::Enrich;
    }
    error
}

impl Enrich {
    /// The real request, retried like a sink write; its JSON answer.
    async fn send(
        &self,
        meta: std::sync::Arc<crate::message::Meta>,
        payload: Payload,
        query: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, FlowError> {
        let meta = &meta;
        let answer = with_retry(&self.retry, &self.flow, "enrich", || {
            let (mut payload, body) = (payload.clone(), body.clone());
            async move { self.call.send(&mut payload, meta, query, body).await }
        })
        .await
        .map_err(|(e, _)| as_enrich_error(e))?;
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            let mut error = FlowError::permanent(
                ErrorKind::Enrich,
                format!("the enrich answer is not JSON: {e}"),
            );
            error.upstream_status = Some(answer.status);
            error
        })
    }
}

impl Step for Enrich {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Wait(Box::pin(self.call(exec)))
    }
}

/// Compiles `enrich:`: the request (method, URL template, headers) is checked now.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    config: &EnrichConfig,
    key: &str,
) -> Option<Box<dyn Step>> {
    let headers: Vec<(String, String)> = config
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.value.0.clone()))
        .collect();
    let call = match HttpCall::new(
        config.method,
        config.url.value.as_str(),
        &headers,
        config.timeout.0,
    ) {
        Ok(call) => call,
        Err(e) => {
            let at = if e.which == "url" {
                &config.url
            } else {
                &config.headers[&e.which]
            };
            cx.expr_error(at, &e.error, e.help);
            return None;
        }
    };
    let body = match &config.body {
        Some(text) => Some(cx.expr(text)?),
        None => None,
    };
    let mut query = Vec::new();
    for (name, text) in &config.query {
        query.push((name.clone(), cx.expr(text)?));
    }
    if config.into.value.trim().is_empty() {
        cx.error(
            Span::of(&config.into),
            "`into` is empty",
            "name the payload field that receives the answer",
        );
        return None;
    }
    Some(Box::new(Enrich::new(
        &cx.flow.name,
        call,
        body,
        query,
        config.into.value.0.clone(),
        cx.flow.file.errors.retry.clone(),
        key,
    )))
}
