//! `call: <flow>` — runs another flow synchronously (its contracts, steps and sinks) and
//! continues with its final payload: request-reply between flows.
//!
//! Flows are looked up by name when the message runs, in [`crate::directory`], so the called
//! flow may be reloaded independently. A cycle of calls is a load error; a depth limit in the
//! metadata guards against anything that slips through.

use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use sluice_flow::{Span, Spanned, Text};

/// Metadata: how deep in nested calls a message is.
pub const CALL_DEPTH: &str = "call.depth";
/// Nested calls at most.
pub const MAX_DEPTH: usize = 16;

/// The compiled `call` step.
pub struct Call {
    flow: String,
    /// The step's name or position: what a dry run's mock of this call is keyed by.
    key: String,
}

impl Call {
    /// A call of the flow named `flow`, by the step known as `key`.
    pub fn new(flow: &str, key: &str) -> Self {
        Call {
            flow: flow.to_owned(),
            key: key.to_owned(),
        }
    }
}

impl Step for Call {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Wait(Box::pin(self.wait(exec)))
    }
}

impl Call {
    async fn wait(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let depth: usize = exec
            .meta
            .get(CALL_DEPTH)
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        if depth >= MAX_DEPTH {
            return Err(FlowError::permanent(
                ErrorKind::Transform,
                format!("calls nested deeper than {MAX_DEPTH}; is there a cycle of calls?"),
            ));
        }
        if let Some(probe) = exec.probe.clone()
            && let Some(mock) = probe.mock(&self.key)
        {
            // A dry run with this call mocked: the called flow does not run.
            let sent = exec
                .payload
                .json()
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            probe.sent(&self.key, sent);
            probe.note_mocked();
            let what = format!("the called flow `{}`", self.flow);
            if let Some(body) = mock.answer(&what, ErrorKind::Sink, None).await? {
                exec.payload = crate::message::Payload::from_json(body);
            }
            return Ok(Control::Continue);
        }
        let Some(flow) = crate::directory::lookup(&self.flow) else {
            return Err(FlowError::new(
                ErrorKind::Sink,
                format!("the called flow `{}` is not running", self.flow),
            ));
        };
        let mut meta = (*exec.meta).clone();
        meta.insert(CALL_DEPTH.to_owned(), (depth + 1).to_string());
        meta.insert("flow".to_owned(), flow.name.clone());
        let payload = exec.payload.snapshot();
        let probe = exec.probe.as_ref().map(|p| p.in_call(&flow.name));
        let result = flow.call(payload, meta, exec.dry, probe).await;
        let payload = result.map_err(|e| {
            let step = e.step.clone().unwrap_or_default();
            FlowError {
                message: format!("in called flow `{}` ({step}): {}", self.flow, e.message),
                step: None,
                ..e
            }
        })?;
        match payload {
            Some(payload) => {
                exec.payload = payload;
                Ok(Control::Continue)
            }
            // The called flow filtered the message: so is it here.
            None => Ok(Control::Drop),
        }
    }
}

/// Compiles `call: <flow>`; the callee is looked up when a message runs, and a cycle of
/// calls among the running flows is refused by the registry.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    flow: &Spanned<Text>,
    key: &str,
) -> Option<Box<dyn Step>> {
    let name = flow.value.as_str().trim();
    if name.is_empty() {
        cx.error(
            Span::of(flow),
            "`call` needs the name of a flow",
            "for example `call: price-lookup`",
        );
        None
    } else if name == cx.flow.name {
        cx.error(
            Span::of(flow),
            format!("flow `{name}` calls itself"),
            "a cycle of calls would never end; call another flow",
        );
        None
    } else {
        cx.calls.push((name.to_owned(), Span::of(flow)));
        Some(Box::new(Call::new(name, key)))
    }
}
