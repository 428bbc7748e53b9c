use super::{Control, Delivery, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::FlowError;
use sluice_flow::{Spanned, Targets};
use std::sync::Arc;

/// `to: <sink> | [sinks]` — records a delivery of the current payload and continues.
pub struct To {
    sinks: Arc<[String]>,
}

impl To {
    /// A delivery to these sinks (names already checked to exist).
    pub fn new(sinks: Vec<String>) -> Self {
        To {
            sinks: sinks.into(),
        }
    }

    pub(crate) fn record(sinks: &Arc<[String]>, exec: &mut Exec) {
        exec.deliveries.push(Delivery {
            sinks: sinks.clone(),
            payload: exec.payload.snapshot(),
        });
    }
}

impl Step for To {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }

    fn in_place(&self) -> bool {
        true
    }
}

impl To {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        To::record(&self.sinks, exec);
        Ok(Control::Continue)
    }
}

/// Compiles `to: <sink> | [sinks]`; every name must be a sink of the flow.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    targets: &Spanned<Targets>,
    sinks: &[&str],
) -> Option<Box<dyn Step>> {
    Some(Box::new(To::new(cx.targets(targets, sinks)?)))
}
