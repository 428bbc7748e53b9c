//! A compiled flow version and the path of one message through it:
//! input contract → steps → output contract → sinks (with retry) → dead letter → outcome.

use crate::connector::{Envelope, Failure, Outcome, Outgoing, Reply, Sink, Trigger};
use crate::contract::Contract;
use crate::error::{ErrorEnvelope, ErrorKind, FlowError};
use crate::message::{Message, Meta, Payload};
use crate::retry::with_retry;
use crate::stats::FlowStats;
use crate::steps::{Control, Exec, Steps};
use crate::testing::CompiledTest;
use arc_swap::ArcSwap;
use futures_util::future::join_all;
use serde_json::{Value, json};
use sluice_flow::{RetryConfig, TriggerConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, mpsc};

/// One version of a flow, ready to run messages. Immutable; a reload builds a new one.
pub struct CompiledFlow {
    /// The flow's name.
    pub name: String,
    /// Content hash of the flow file and every file it depends on.
    pub version: String,
    /// The flow file.
    pub path: PathBuf,
    /// `description:`.
    pub description: Option<String>,
    /// Trigger configuration (a reload with the same one keeps the trigger running).
    pub trigger_config: TriggerConfig,
    /// The trigger, until it is started.
    pub trigger: Mutex<Option<Box<dyn Trigger>>>,
    /// Messages processed at once.
    pub concurrency: usize,
    /// Capacity of the queue between trigger and workers.
    pub queue: usize,
    /// `contract.input`.
    pub input_contract: Option<Arc<Contract>>,
    /// `contract.output`.
    pub output_contract: Option<Arc<Contract>>,
    /// The steps.
    pub steps: Steps,
    /// Named sinks.
    pub sinks: HashMap<String, Arc<dyn Sink>>,
    /// `errors.dead_letter`.
    pub dead_letter: Option<Arc<dyn Sink>>,
    /// The folder of a `file` dead-letter sink (listed by the admin API).
    pub dead_letter_folder: Option<PathBuf>,
    /// `errors.retry`.
    pub retry: RetryConfig,
    /// `tests:`.
    pub tests: Vec<CompiledTest>,
    /// Schema and script files this version was built from (a change reloads the flow).
    pub dependencies: Vec<PathBuf>,
}

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
    /// Runs the input contract, the steps and the output contract; no I/O.
    pub async fn execute(&self, message: Message) -> Result<Executed, FlowError> {
        let Message { mut payload, meta } = message;
        if let Some(contract) = &self.input_contract {
            let json = payload
                .json()
                .map_err(|e| FlowError::new(ErrorKind::Transform, e).at_step("contract.input"))?;
            contract
                .check(json)
                .map_err(|e| e.at_step("contract.input"))?;
        }
        let mut exec = Exec::new(payload, meta);
        let control = self.steps.run(&mut exec).await?;
        if control == Control::Continue
            && let Some(contract) = &self.output_contract
        {
            for delivery in &mut exec.deliveries {
                let json = delivery.payload.json().map_err(|e| {
                    FlowError::new(ErrorKind::Transform, e).at_step("contract.output")
                })?;
                contract
                    .check(json)
                    .map_err(|e| e.at_step("contract.output"))?;
            }
        }
        Ok(Executed {
            control,
            payload: exec.payload,
            meta: exec.meta,
            deliveries: exec.deliveries,
            reply: exec.reply,
        })
    }

    /// Runs one message end to end, including sink writes, retries and the dead letter.
    pub async fn handle(&self, message: Message, want_reply: bool) -> Outcome {
        let message_id = message.id().to_owned();
        let correlation_id = message.meta.get("correlation_id").cloned();
        let original = self
            .dead_letter
            .as_ref()
            .map(|_| (message.payload.clone(), message.meta.clone()));
        let (error, attempts) = match self.execute(message).await {
            Ok(executed) if executed.control == Control::Drop => {
                tracing::debug!(flow = %self.name, message_id = %message_id, "filtered");
                return Outcome::Filtered;
            }
            Ok(mut executed) if executed.deliveries.is_empty() => {
                return Outcome::Completed(reply(&mut executed, want_reply));
            }
            Ok(mut executed) => {
                let reply = reply(&mut executed, want_reply);
                match self.deliver(executed).await {
                    Ok(()) => return Outcome::Delivered(reply),
                    Err(failed) => failed,
                }
            }
            Err(error) => {
                let attempts = error.attempts.max(1);
                (error, attempts)
            }
        };
        let mut envelope =
            ErrorEnvelope::new(&self.name, &self.version, &message_id, &error, attempts);
        envelope.correlation_id = correlation_id;
        tracing::warn!(flow = %self.name, message_id = %message_id, kind = %error.kind, "message failed: {error}");
        let dead_lettered = match (&self.dead_letter, original) {
            (Some(sink), Some((payload, meta))) => {
                self.dead_letter_write(sink.as_ref(), payload, meta, &envelope)
                    .await
            }
            _ => false,
        };
        Outcome::Failed(Box::new(Failure {
            error,
            envelope,
            dead_lettered,
        }))
    }

    /// Writes every delivery, each sink in parallel, retrying transient failures.
    async fn deliver(&self, executed: Executed) -> Result<(), (FlowError, u32)> {
        let mut writes = Vec::new();
        for delivery in &executed.deliveries {
            for sink_name in delivery.sinks.iter() {
                let Some(sink) = self.sinks.get(sink_name) else {
                    // Compilation checks every sink name, so this is unreachable in practice.
                    return Err((
                        FlowError::permanent(
                            ErrorKind::Sink,
                            format!("no sink named `{sink_name}`"),
                        ),
                        1,
                    ));
                };
                let out = Outgoing {
                    payload: delivery.payload.clone(),
                    meta: executed.meta.clone(),
                };
                writes.push(self.write_with_retry(sink_name, sink.as_ref(), out));
            }
        }
        let results = if writes.len() == 1 {
            vec![writes.pop().expect("one write").await]
        } else {
            join_all(writes).await
        };
        results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    async fn write_with_retry(
        &self,
        sink_name: &str,
        sink: &dyn Sink,
        out: Outgoing,
    ) -> Result<(), (FlowError, u32)> {
        with_retry(&self.retry, &self.name, sink_name, || {
            let mut out = out.clone();
            async move { sink.write(&mut out).await }
        })
        .await
        .map_err(|(e, attempts)| (e.at_step(format!("sink {sink_name}")), attempts))
    }

    async fn dead_letter_write(
        &self,
        sink: &dyn Sink,
        mut original: Payload,
        meta: Arc<Meta>,
        envelope: &ErrorEnvelope,
    ) -> bool {
        let message = original.json().cloned().unwrap_or(Value::Null);
        let payload = json!({
            "message": message,
            "meta": &*meta,
            "error": envelope,
        });
        let out = Outgoing {
            payload: Payload::from_json(payload),
            meta,
        };
        match self.write_with_retry("dead_letter", sink, out).await {
            Ok(()) => true,
            Err((e, _)) => {
                tracing::error!(flow = %self.name, message_id = %envelope.message_id, "dead letter write failed: {e}");
                false
            }
        }
    }
}

fn reply(executed: &mut Executed, wanted: bool) -> Option<Reply> {
    if !wanted {
        return None;
    }
    Some(Reply {
        payload: executed.payload.json().cloned().unwrap_or(Value::Null),
        status: executed.reply.status,
        headers: std::mem::take(&mut executed.reply.headers),
        message_id: executed.meta.get("message_id").cloned().unwrap_or_default(),
    })
}

/// Takes messages from the flow's queue and runs up to `concurrency` of them at once, each
/// on the flow version that was current when it started. Returns when the queue is closed
/// and every message taken has been acknowledged.
pub async fn run_workers(
    mut rx: mpsc::Receiver<Envelope>,
    current: Arc<ArcSwap<CompiledFlow>>,
    concurrency: usize,
    stats: Arc<FlowStats>,
) {
    let limit = Arc::new(Semaphore::new(concurrency));
    while let Some(Envelope {
        message,
        ack,
        reply,
    }) = rx.recv().await
    {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let flow = current.load_full();
        let stats = stats.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            stats.started();
            let outcome = flow.handle(message, reply).await;
            stats.finished(&outcome, started.elapsed());
            ack.ack(outcome).await;
            drop(permit);
        });
    }
    // Every permit back means every message taken has been acknowledged.
    let _ = limit.acquire_many(concurrency as u32).await;
}
