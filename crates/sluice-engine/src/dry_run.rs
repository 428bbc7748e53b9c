//! Dry runs of a compiled flow (`tests:`, `sluice exec`, the benchmarks): the contracts and
//! steps of one message, with its deliveries collected instead of written.

use crate::error::{ErrorKind, FlowError};
use crate::flow::CompiledFlow;
use crate::message::{Message, Meta, Payload};
use crate::steps::{Control, Exec, Fork};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;

/// The result of running the steps of one message, before any I/O.
pub struct Executed {
    /// `Drop` when a filter removed the message.
    pub control: Control,
    /// The payload after the last step.
    pub payload: Payload,
    /// The metadata.
    pub meta: Arc<Meta>,
    /// Deliveries to perform.
    pub deliveries: Vec<crate::steps::Delivery>,
    /// Status and headers set by `reply` steps.
    pub reply: crate::steps::ReplySpec,
}

impl CompiledFlow {
    /// Runs the input contract, the steps and the output contract as a dry run (no I/O, no
    /// waiting, no state touched); `split` children run one after the other and their
    /// deliveries are collected. Used by `tests:`, `sluice exec` and the benchmarks.
    pub async fn execute(&self, message: Message) -> Result<Executed, FlowError> {
        let Message { payload, meta } = message;
        let mut exec = Exec::new(payload, meta);
        exec.dry = true;
        self.dry_from(exec, 0).await
    }

    fn dry_from(&self, mut exec: Exec, start: usize) -> BoxFuture<'_, Result<Executed, FlowError>> {
        async move {
            let (control, at) = self.steps_from(&mut exec, start).await?;
            if control != Control::Fork {
                return Ok(Executed {
                    control,
                    payload: exec.payload,
                    meta: exec.meta,
                    deliveries: exec.deliveries,
                    reply: exec.reply,
                });
            }
            let Some(Fork::Split(children)) = exec.fork.take() else {
                // `aggregate` completes at once in a dry run and never forks.
                return Err(FlowError::permanent(
                    ErrorKind::Transform,
                    "unexpected fork in a dry run",
                ));
            };
            let mut payloads = Vec::new();
            let mut deliveries = exec.deliveries;
            for child in children.into_execs(&exec.meta, None) {
                let mut child = child;
                child.dry = true;
                let done = self.dry_from(child, at + 1).await?;
                if done.control == Control::Continue {
                    let payload = done
                        .payload
                        .into_json()
                        .map_err(|e| FlowError::permanent(ErrorKind::Transform, e))?;
                    payloads.push(payload);
                }
                deliveries.extend(done.deliveries);
            }
            Ok(Executed {
                control: Control::Continue,
                payload: Payload::from_json(Value::Array(payloads)),
                meta: exec.meta,
                deliveries,
                reply: exec.reply,
            })
        }
        .boxed()
    }
}
