use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::FlowError;
use crate::expr::Template;
use crate::message::Ids;
use sluice_flow::{Spanned, Text};

/// `log: <template>` — writes one line to the log with the message id and flow.
pub struct Log {
    template: Template,
}

impl Log {
    /// A log step.
    pub fn new(template: Template) -> Self {
        Log { template }
    }
}

impl Step for Log {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }

    fn in_place(&self) -> bool {
        true
    }
}

impl Log {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let flow = exec.meta.get("flow").cloned().unwrap_or_default();
        let message_id = exec.meta.message_id().to_owned();
        let meta = exec.meta.clone();
        // A log line that cannot be rendered is itself logged; it never fails the message.
        let rendered = self.template.render(&mut exec.payload, &meta);
        if let (Some(probe), Ok(line)) = (&exec.probe, &rendered) {
            probe.note_log(line);
        }
        match rendered {
            // `tests:` cases run at every reload; their log lines would read like traffic.
            Ok(line) if exec.meta.contains_key(crate::testing::TEST_MARKER) => {
                tracing::debug!(flow = %flow, message_id = %message_id, test = true, "{line}")
            }
            Ok(line) => tracing::info!(flow = %flow, message_id = %message_id, "{line}"),
            Err(e) => tracing::warn!(flow = %flow, message_id = %message_id, "log step: {e}"),
        }
        Ok(Control::Continue)
    }
}

/// Compiles `log: <template>`.
pub(crate) fn compile(cx: &mut Compiler<'_>, text: &Spanned<Text>) -> Option<Box<dyn Step>> {
    match Template::compile(text.value.as_str()) {
        Ok(t) => Some(Box::new(Log::new(t))),
        Err(e) => {
            cx.expr_error(text, &e, "a template is text with `{{ jmespath }}` holes");
            None
        }
    }
}
