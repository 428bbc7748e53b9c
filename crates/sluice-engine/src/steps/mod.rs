//! Compiled steps: one module per step kind, all behind the [`Step`] trait.
//!
//! Steps are pure and synchronous: they transform the payload and record deliveries. Sink
//! I/O happens after the last step, in the runtime, where retries and acks live.

mod filter;
mod log;
mod route;
mod script;
mod set;
mod to;
mod transform;
mod validate;

pub use filter::Filter;
pub use log::Log;
pub use route::{Route, RouteAction, RouteArm};
pub use script::Script;
pub use set::Set;
pub use to::To;
pub use transform::Transform;
pub use validate::Validate;

use crate::error::{ErrorKind, FlowError};
use crate::message::{Meta, Payload};
use std::sync::Arc;

/// A payload bound for some sinks, recorded by `to` or `route`.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Sink names, in the order written.
    pub sinks: Arc<[String]>,
    /// The payload as it was when the delivery was recorded.
    pub payload: Payload,
}

/// The state of one message while its steps run.
pub struct Exec {
    /// The payload, in its current form.
    pub payload: Payload,
    /// The message metadata.
    pub meta: Arc<Meta>,
    /// Deliveries recorded so far.
    pub deliveries: Vec<Delivery>,
}

impl Exec {
    /// Starts executing a message.
    pub fn new(payload: Payload, meta: Arc<Meta>) -> Self {
        Exec {
            payload,
            meta,
            deliveries: Vec::new(),
        }
    }

    /// The JMESPath form of the payload; a conversion failure is a `transform` error.
    pub fn jmes(&mut self) -> Result<jmespath::Rcvar, FlowError> {
        self.payload
            .jmes()
            .map_err(|e| FlowError::new(ErrorKind::Transform, e))
    }
}

/// What the runtime does after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Go on with the next step.
    Continue,
    /// The message was filtered out: stop, acknowledge, count.
    Drop,
}

/// One compiled step.
pub trait Step: Send + Sync {
    /// Runs the step on one message.
    fn run(&self, exec: &mut Exec) -> Result<Control, FlowError>;
}

/// A sequence of steps, each labelled for error messages (`steps[2] (script)`).
#[derive(Default)]
pub struct Steps {
    steps: Vec<(String, Box<dyn Step>)>,
}

impl Steps {
    /// Appends a step.
    pub fn push(&mut self, label: String, step: Box<dyn Step>) {
        self.steps.push((label, step));
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True when there are no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every step in order until one drops the message or fails.
    pub fn run(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        for (label, step) in &self.steps {
            match step.run(exec) {
                Ok(Control::Continue) => {}
                Ok(Control::Drop) => return Ok(Control::Drop),
                Err(e) => return Err(e.at_step(label.clone())),
            }
        }
        Ok(Control::Continue)
    }
}
