//! `try: [steps]` followed by `catch: [steps]` — handles an error inside the flow.
//!
//! When a step of `try` fails, the payload and the deliveries go back to what they were when
//! `try` began, the error is put in the metadata (`error.kind`, `error.message`,
//! `error.step`), and the `catch` steps run; the message then continues after `catch`, unless
//! the handler ended it (`stop`, or a `reply`, which answers the error to the caller). Sink
//! errors happen after the steps and are not caught (they have retries and the dead letter).

use super::{Control, Exec, Run, Step, Steps};
use crate::compile::Compiler;
use crate::error::FlowError;
use sluice_flow::{FlowStep, Span, Spanned};

/// The compiled pair of `try` and `catch`.
pub struct TryCatch {
    body: Steps,
    handler: Steps,
}

impl TryCatch {
    /// A `try` body with its `catch` handler.
    pub fn new(body: Steps, handler: Steps) -> Self {
        TryCatch { body, handler }
    }
}

impl Step for TryCatch {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Wait(Box::pin(self.wait(exec)))
    }

    fn in_place(&self) -> bool {
        self.body.in_place() && self.handler.in_place()
    }
}

impl TryCatch {
    async fn wait(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let payload = exec.payload.snapshot();
        let deliveries = exec.deliveries.len();
        match self.body.run(exec).await {
            Ok(control) => Ok(control),
            Err(error) => {
                exec.payload = payload;
                exec.deliveries.truncate(deliveries);
                exec.set_meta("error.kind", error.kind.as_str());
                exec.set_meta("error.message", error.message.clone());
                exec.set_meta("error.step", error.step.clone().unwrap_or_default());
                self.handler.run(exec).await
            }
        }
    }
}

/// Compiles a `try` step and the `catch` after it (`handler`, `None` when missing) into one.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    step: &Spanned<FlowStep>,
    body: &[Spanned<FlowStep>],
    handler: Option<&Vec<Spanned<FlowStep>>>,
    path: &str,
    sinks: &[&str],
) -> Option<Box<dyn Step>> {
    let Some(handler) = handler else {
        cx.error(
            Span::of(step),
            "`try` must be followed by a `catch` step",
            "add `- catch: [...]` right after it, with the steps that handle the error (the error is in meta('error.kind'), meta('error.message'), meta('error.step'))",
        );
        return None;
    };
    if body.is_empty() {
        cx.error(
            Span::of(step),
            "`try` has no steps",
            "list the steps that may fail: `- try: [ {script: ...} ]`",
        );
        return None;
    }
    let before = cx.diagnostics.len();
    let body = cx.steps(body, &format!("{path}.try"), sinks);
    cx.catch_depth += 1;
    let handler = cx.steps(handler, &format!("{path}.catch"), sinks);
    cx.catch_depth -= 1;
    (cx.diagnostics.len() == before)
        .then(|| Box::new(TryCatch::new(body, handler)) as Box<dyn Step>)
}
