//! Dry runs of a compiled flow (`tests:`, `sluice exec`, the benchmarks): one message takes
//! the same path as under `sluice run` ([`CompiledFlow::run`] in a dry mode), and a
//! [`Recorder`] collects what would have been written instead of the sinks.

use crate::connector::Outcome;
use crate::error::{ErrorKind, FlowError};
use crate::flow::{CompiledFlow, Mode};
use crate::message::{Message, Meta, Payload};
use crate::steps::{Control, Delivery, Exec, ReplySpec};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// The result of running the steps of one message, before any I/O.
pub struct Executed {
    /// `Drop` when a filter removed the message.
    pub control: Control,
    /// The payload after the last step (for a split: the children's payloads, in order).
    pub payload: Payload,
    /// The metadata.
    pub meta: Arc<Meta>,
    /// Deliveries to perform.
    pub deliveries: Vec<Delivery>,
    /// Status and headers set by `reply` steps.
    pub reply: ReplySpec,
}

/// What a dry run would have written: the deliveries in order, how each message (or split
/// child) ended, and the split parent's own state.
#[derive(Default)]
pub(crate) struct Recorder(Mutex<Recorded>);

#[derive(Default)]
struct Recorded {
    deliveries: Vec<Delivery>,
    /// How the message ended, without a split.
    end: Option<End>,
    /// How each child ended, after a split.
    children: Vec<End>,
    /// The parent's metadata and reply, once a split handed over to its children.
    parent: Option<(Arc<Meta>, ReplySpec)>,
    /// The payload and metadata as they were when the message (or a child) failed.
    failed: Option<(Value, Arc<Meta>)>,
}

/// How a message or split child ended.
struct End {
    control: Control,
    payload: Payload,
    meta: Arc<Meta>,
    reply: ReplySpec,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message (or split child) ran its last step (`Continue`) or was filtered (`Drop`):
    /// its payload, metadata, reply and the deliveries it would have written are kept.
    pub(crate) fn end(&self, control: Control, exec: Exec) {
        let Exec {
            payload,
            meta,
            deliveries,
            reply,
            ..
        } = exec;
        let end = End {
            control,
            payload,
            meta,
            reply,
        };
        let mut recorded = self.lock();
        if recorded.deliveries.is_empty() {
            // The common case, one message: its list is taken as it is.
            recorded.deliveries = deliveries;
        } else {
            recorded.deliveries.extend(deliveries);
        }
        if recorded.parent.is_some() {
            recorded.children.push(end);
        } else {
            recorded.end = Some(end);
        }
    }

    /// A message (or split child) failed: its payload as it was then is kept for the
    /// report (the first failure, should several children fail).
    pub(crate) fn failed(&self, exec: &mut Exec) {
        let payload = shown(&mut exec.payload);
        let mut recorded = self.lock();
        if recorded.failed.is_none() {
            recorded.failed = Some((payload, exec.meta.clone()));
        }
    }

    /// A split hands over to its children: the parent's own deliveries come first.
    pub(crate) fn split(&self, parent: &mut Exec) {
        let mut recorded = self.lock();
        recorded
            .deliveries
            .extend(std::mem::take(&mut parent.deliveries));
        recorded.parent = Some((parent.meta.clone(), std::mem::take(&mut parent.reply)));
    }

    fn into_executed(self) -> Result<Executed, FlowError> {
        let recorded = self.0.into_inner().unwrap_or_else(|p| p.into_inner());
        let Recorded {
            deliveries,
            end,
            children,
            parent,
            failed: _,
        } = recorded;
        if let Some((meta, reply)) = parent {
            let mut payloads = Vec::new();
            for end in children {
                if end.control == Control::Continue {
                    let payload = end
                        .payload
                        .into_json()
                        .map_err(|e| FlowError::permanent(ErrorKind::Transform, e))?;
                    payloads.push(payload);
                }
            }
            return Ok(Executed {
                control: Control::Continue,
                payload: Payload::from_json(Value::Array(payloads)),
                meta,
                deliveries,
                reply,
            });
        }
        let Some(end) = end else {
            return Err(FlowError::permanent(
                ErrorKind::Transform,
                "internal: a dry run ended without a result",
            ));
        };
        Ok(Executed {
            control: end.control,
            payload: end.payload,
            meta: end.meta,
            deliveries,
            reply: end.reply,
        })
    }
}

/// A dry run that failed: the error, and the payload and metadata as they were when it
/// happened.
pub struct DryFailure {
    /// The error.
    pub error: FlowError,
    /// The payload at the failing step (`None` when nothing of it could be kept).
    pub payload: Option<Value>,
    /// The metadata then.
    pub meta: Option<Arc<Meta>>,
}

impl CompiledFlow {
    /// Runs the input contract, the steps and the output contract as a dry run (no I/O, no
    /// waiting, no state touched); `split` children run one after the other and their
    /// deliveries are collected. Used by `tests:`, `sluice exec` and the benchmarks.
    pub async fn execute(&self, message: Message) -> Result<Executed, FlowError> {
        self.execute_probed(message, None)
            .await
            .map_err(|failure| failure.error)
    }

    /// [`CompiledFlow::execute`] watched by `probe` (trace, mocks, what was sent); a
    /// failure keeps the payload as it was at the failing step.
    pub async fn execute_probed(
        &self,
        message: Message,
        probe: Option<crate::probe::Probe>,
    ) -> Result<Executed, DryFailure> {
        let Message { payload, meta } = message;
        let mut exec = Exec::new(payload, meta);
        exec.dry = true;
        exec.probe = probe;
        let recorder = Recorder::default();
        match self.run(exec, 0, Mode::dry(&recorder)).await {
            Some(Outcome::Failed(failure)) => {
                let recorded = recorder.0.into_inner().unwrap_or_else(|p| p.into_inner());
                let (payload, meta) = recorded.failed.unzip();
                Err(DryFailure {
                    error: failure.error,
                    payload,
                    meta,
                })
            }
            Some(_) => recorder.into_executed().map_err(|error| DryFailure {
                error,
                payload: None,
                meta: None,
            }),
            // Only a message parked in an aggregate group is abandoned; a dry run never parks.
            None => Err(DryFailure {
                error: FlowError::permanent(
                    ErrorKind::Transform,
                    "internal: a dry run was abandoned",
                ),
                payload: None,
                meta: None,
            }),
        }
    }
}

/// A payload as a dry run's report shows it: its JSON form, or, for a payload that has none
/// (a script's NaN, an expression reference), what keeps it from having one — never `null`,
/// which would read as if the payload were null.
pub(crate) fn shown(payload: &mut Payload) -> Value {
    match payload.json() {
        Ok(json) => json.clone(),
        Err(e) => Value::String(format!("(the payload has no JSON form: {e})")),
    }
}
