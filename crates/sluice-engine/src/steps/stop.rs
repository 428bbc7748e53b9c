//! `stop: completed | filtered` — ends the message on purpose: the steps after it (also
//! those after the `route` arm or `catch` it sits in) do not run.

use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use sluice_flow::StopOutcome;

/// The compiled `stop` step: always answers the same control.
pub struct Stop {
    control: Control,
}

impl Step for Stop {
    fn run<'a>(&'a self, _: &'a mut Exec) -> Run<'a> {
        Run::Done(Ok(self.control))
    }

    fn in_place(&self) -> bool {
        true
    }
}

/// Compiles `stop:` (no value means `completed`).
pub(crate) fn compile(_: &mut Compiler<'_>, outcome: Option<StopOutcome>) -> Option<Box<dyn Step>> {
    let control = match outcome.unwrap_or_default() {
        StopOutcome::Completed => Control::End,
        StopOutcome::Filtered => Control::Drop,
    };
    Some(Box::new(Stop { control }))
}
