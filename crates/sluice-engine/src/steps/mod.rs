//! Compiled steps: one module per step kind, all behind the [`Step`] trait.
//!
//! Most steps are pure: they transform the payload and record deliveries, and answer at once
//! ([`Run::Done`]). Steps that wait (script, enrich, throttle, call, a persistent dedupe
//! store) hand back a future ([`Run::Wait`]). Sink I/O happens after the last step, in
//! the runtime, where retries and acks live. `split` and `aggregate` end a top-level run with
//! [`Control::Fork`]; the runtime then carries on with the children or the group.

pub mod aggregate;
pub mod call;
pub mod dedupe;
mod enrich;
mod filter;
pub(crate) mod kinds;
mod log;
mod reply;
mod route;
mod script;
mod set;
pub mod split;
mod stop;
pub mod throttle;
mod to;
mod transform;
pub mod try_catch;
mod validate;
pub mod wiretap;

use crate::error::{ErrorKind, FlowError};
use crate::hold::Hold;
use crate::message::{Meta, Payload};
use std::sync::Arc;

/// Work to do when a message is finished: called with `true` when it was delivered,
/// completed or filtered, `false` when it failed or was abandoned.
pub type Finally = Box<dyn FnOnce(bool) + Send>;

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
    /// A dry run (`tests:`, `sluice exec`): steps with outside effects or state across
    /// messages behave as documented for dry runs and never wait.
    pub dry: bool,
    /// In a dry run: the trace, the mocks and what was sent to them.
    pub probe: Option<crate::probe::Probe>,
    /// The message's hold on its worker slot and its batch; dropped when it settles.
    pub hold: Option<Hold>,
    /// Kept until the message is finished (e.g. a throttle's concurrency permit).
    pub guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
    /// Called when the message is finished (e.g. a dedupe key is confirmed or removed).
    pub finally: Vec<Finally>,
    /// Set together with [`Control::Fork`] by `split` and `aggregate`.
    pub fork: Option<Fork>,
    /// What `reply` steps set for a request-reply trigger.
    pub reply: ReplySpec,
    /// The caller waiting for the answer (request-reply): no sink is written once it was
    /// told that nothing was delivered.
    pub caller: Option<crate::connector::Caller>,
}

/// The status and headers of a request-reply answer, as set by `reply` steps.
#[derive(Clone, Debug, Default)]
pub struct ReplySpec {
    /// The status, when set.
    pub status: Option<u16>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body's format, and the root element's name for XML, when a `reply` set them.
    pub body: Option<ReplyBody>,
}

/// The body format a `reply` step chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyBody {
    /// JSON.
    Json,
    /// XML; the root element's name, or none when the payload is an object of one key.
    Xml(Option<String>),
}

/// What a top-level run that ended with [`Control::Fork`] continues with.
pub enum Fork {
    /// One child per payload, each running the steps after the split.
    Split(split::Children),
    /// The message joined an aggregate group and waits for it.
    Park(aggregate::Parked),
}

impl Exec {
    /// Starts executing a message.
    pub fn new(payload: Payload, meta: Arc<Meta>) -> Self {
        Exec {
            payload,
            meta,
            deliveries: Vec::new(),
            dry: false,
            probe: None,
            hold: None,
            guards: Vec::new(),
            finally: Vec::new(),
            fork: None,
            reply: ReplySpec::default(),
            caller: None,
        }
    }

    /// Runs the `finally` work with the message's result.
    pub fn finish(&mut self, success: bool) {
        for f in self.finally.drain(..) {
            f(success);
        }
    }

    /// Sets a metadata entry (metadata is shared, so it is copied on first write).
    pub fn set_meta(&mut self, key: &str, value: impl Into<String>) {
        Arc::make_mut(&mut self.meta).insert(key.to_owned(), value.into());
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
    /// A `split` or `aggregate` took over (see [`Exec::fork`]); top level only.
    Fork,
    /// The message ends here as if every step had run (`stop`, a `reply` in `catch`): the
    /// enclosing step lists stop too, and the flow then delivers and answers as usual.
    End,
}

/// The work a step left to wait for (a script on the blocking pool, an HTTP call, a
/// throttle's permit).
pub type StepFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Control, FlowError>> + Send + 'a>>;

/// What running a step gives back: its result at once, or work to wait for. A step decides
/// per message, so a pure step costs no allocation and a `route` waits only when the arm
/// it picked has steps of its own.
pub enum Run<'a> {
    /// The step finished without waiting.
    Done(Result<Control, FlowError>),
    /// The step waits; the runner awaits this.
    Wait(StepFuture<'a>),
}

#[cfg(test)]
impl Run<'_> {
    /// The step's result, waiting for it when it has to (the runner matches in place, so
    /// that a pure step's answer is not moved into one more future).
    pub async fn result(self) -> Result<Control, FlowError> {
        match self {
            Run::Done(result) => result,
            Run::Wait(future) => future.await,
        }
    }
}

/// One compiled step: pure (answers with [`Run::Done`]) or waiting (answers with
/// [`Run::Wait`]). There is one way to run a step, so no step can be run the wrong way.
pub trait Step: Send + Sync {
    /// Runs the step on one message.
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a>;

    /// Whether the step only computes (or runs a script, bounded by its deadline), so that a
    /// message may run it on the thread that read it ([`crate::in_place`]). Steps that wait
    /// for the network, a timer or other messages say no: in place, they would hold the
    /// reading thread and take away the flow's concurrency.
    fn in_place(&self) -> bool {
        false
    }
}

/// A step whose state outlives one message (aggregate groups), told about the flow's life.
pub trait Stateful: Send + Sync {
    /// The flow stops: complete or abandon what is open, as configured.
    fn stop(&self);
    /// This version was replaced by one that does not share the state: complete what is open.
    fn retire(&self);
    /// An identity of the shared state (steps of two versions may share one).
    fn state_id(&self) -> usize;
    /// Whether two steps share their state.
    fn same_state(&self, other: &dyn Stateful) -> bool {
        self.state_id() == other.state_id()
    }
}

/// Runs one step of a dry run; with a tracing probe, the payload, metadata, deliveries and
/// notes after it (or its error, with the payload as it was) join the trace.
async fn traced(label: &str, step: &dyn Step, exec: &mut Exec) -> Result<Control, FlowError> {
    let Some(probe) = exec.probe.clone().filter(|p| p.tracing()) else {
        return match step.run(exec) {
            Run::Done(result) => result,
            Run::Wait(future) => future.await,
        };
    };
    let before = exec.payload.json().ok().cloned();
    let meta_before = exec.meta.clone();
    let deliveries = exec.deliveries.len();
    probe.begin();
    let result = match step.run(exec) {
        Run::Done(result) => result,
        Run::Wait(future) => future.await,
    };
    let after = exec.payload.json().ok().cloned();
    let mut entry = crate::probe::entry(label, before.as_ref(), after, &meta_before, &exec.meta);
    entry.child = meta_before.get(crate::steps::split::SPLIT_INDEX).cloned();
    for delivery in exec.deliveries.iter().skip(deliveries) {
        entry.to.extend(delivery.sinks.iter().cloned());
    }
    match &result {
        Ok(Control::Drop) => entry.outcome = Some("filtered"),
        Err(e) => {
            // At an error: the whole payload as it was then.
            entry.changed.clear();
            entry.removed.clear();
            entry.payload = exec.payload.json().ok().cloned();
            entry.error = Some(crate::probe::TraceError {
                kind: e.kind,
                message: e.message.clone(),
            });
        }
        _ => {}
    }
    probe.end(entry);
    result
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

    /// Whether every step may run in place ([`Step::in_place`]).
    pub fn in_place(&self) -> bool {
        self.steps.iter().all(|(_, step, _)| step.in_place())
    }

    /// Runs every step in order until one drops the message, forks it or fails.
    pub async fn run(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        self.run_from(0, exec).await.map(|(control, _)| control)
    }

    /// Runs the steps from index `start`; returns how the run ended and the index of the
    /// step that ended it (the length when every step ran).
    pub async fn run_from(
        &self,
        start: usize,
        exec: &mut Exec,
    ) -> Result<(Control, usize), FlowError> {
        for (i, (label, step, histogram)) in self.steps.iter().enumerate().skip(start) {
            if exec.dry {
                // A dry run is not traffic: no metric; traced when asked.
                let result = traced(label, step.as_ref(), exec).await;
                match result {
                    Ok(Control::Continue) => continue,
                    Ok(other) => return Ok((other, i)),
                    Err(e) => return Err(e.at_step(label.clone())),
                }
            }
            let started = std::time::Instant::now();
            // Matched here rather than through `Run::result`, so that a pure step's answer
            // is not moved into one more future.
            let result = match step.run(exec) {
                Run::Done(result) => result,
                Run::Wait(future) => future.await,
            };
            histogram.record(started.elapsed().as_secs_f64());
            // One relaxed load when nobody taps (`sluice tap`).
            if crate::tap::active() {
                crate::tap::offer(label, exec, result.as_ref().err());
            }
            match result {
                Ok(Control::Continue) => {}
                Ok(other) => return Ok((other, i)),
                Err(e) => return Err(e.at_step(label.clone())),
            }
        }
        Ok((Control::Continue, self.steps.len()))
    }
}
