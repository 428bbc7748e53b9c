//! Compiled steps: one module per step kind, all behind the [`Step`] trait.
//!
//! Steps are pure and synchronous: they transform the payload and record deliveries. Sink
//! I/O happens after the last step, in the runtime, where retries and acks live.

mod enrich;
mod filter;
mod log;
mod reply;
mod route;
mod script;
mod set;
mod to;
mod transform;
mod validate;

pub use enrich::Enrich;
pub use filter::Filter;
pub use log::Log;
pub use reply::Reply;
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
    /// What `reply` steps set for a request-reply trigger.
    pub reply: ReplySpec,
}

/// The status and headers of a request-reply answer, as set by `reply` steps.
#[derive(Clone, Debug, Default)]
pub struct ReplySpec {
    /// The status, when set.
    pub status: Option<u16>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
}

impl Exec {
    /// Starts executing a message.
    pub fn new(payload: Payload, meta: Arc<Meta>) -> Self {
        Exec {
            payload,
            meta,
            deliveries: Vec::new(),
            reply: ReplySpec::default(),
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

/// A step's pending work, for the steps that wait on I/O (`enrich`).
pub type StepFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Control, FlowError>> + Send + 'a>>;

/// One compiled step.
///
/// Most steps are pure and synchronous and implement only [`Step::run`]; a step that waits
/// on I/O says so with [`Step::is_async`] and implements [`Step::run_async`]. Keeping the
/// synchronous path separate means the common steps cost no allocation per message.
pub trait Step: Send + Sync {
    /// Runs a synchronous step on one message.
    fn run(&self, exec: &mut Exec) -> Result<Control, FlowError>;

    /// True when the step must be run with [`Step::run_async`].
    fn is_async(&self) -> bool {
        false
    }

    /// Runs an asynchronous step on one message.
    fn run_async<'a>(&'a self, exec: &'a mut Exec) -> StepFuture<'a> {
        Box::pin(std::future::ready(self.run(exec)))
    }
}

/// A sequence of steps, each labelled for error messages (`steps[2] (script)`) and timed
/// into the `sluice_step_duration_seconds` histogram.
#[derive(Default)]
pub struct Steps {
    steps: Vec<(String, Box<dyn Step>, metrics::Histogram)>,
}

impl Steps {
    /// Appends a step; `flow` labels its latency histogram.
    pub fn push(&mut self, flow: &str, label: String, step: Box<dyn Step>) {
        let histogram = metrics::histogram!(
            "sluice_step_duration_seconds",
            "flow" => flow.to_owned(),
            "step" => label.clone()
        );
        self.steps.push((label, step, histogram));
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True when there are no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// True when some step (or nested step) waits on I/O.
    pub fn is_async(&self) -> bool {
        self.steps.iter().any(|(_, step, _)| step.is_async())
    }

    /// Runs every step in order until one drops the message or fails.
    pub async fn run(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        for (label, step, histogram) in &self.steps {
            let started = std::time::Instant::now();
            let result = if step.is_async() {
                step.run_async(exec).await
            } else {
                step.run(exec)
            };
            histogram.record(started.elapsed().as_secs_f64());
            match result {
                Ok(Control::Continue) => {}
                Ok(Control::Drop) => return Ok(Control::Drop),
                Err(e) => return Err(e.at_step(label.clone())),
            }
        }
        Ok(Control::Continue)
    }
}
