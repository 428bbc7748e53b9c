use super::{Control, Delivery, Exec, Step};
use crate::error::FlowError;
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
    fn run(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        To::record(&self.sinks, exec);
        Ok(Control::Continue)
    }
}
