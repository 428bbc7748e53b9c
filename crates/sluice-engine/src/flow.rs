//! A compiled flow version and the path of one message through it:
//! input contract → steps → output contract → sinks (with retry) → dead letter → outcome.

use crate::breaker::Breakers;
use crate::connector::{Caller, Outcome, Sink, Trigger};
use crate::contract::Contract;
use crate::error::{ErrorKind, FlowError};
use crate::hold::Hold;
use crate::message::{Ids, Message, Meta, Payload};
use crate::steps::{Control, Exec, Steps};
use crate::testing::CompiledTest;
use sluice_flow::RetryConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use crate::dry_run::Executed;
use crate::dry_run::Recorder;
pub use crate::workers::run_workers;

mod delivery;
mod fork;

use delivery::reply;
use fork::abandoned;

/// The text of the flow file a version was built from, kept so that diagnostics found after
/// compiling (a name or a resource another flow holds, a cycle of calls) quote the version
/// that was loaded rather than whatever the file holds by then.
#[derive(Clone, Debug)]
pub struct FlowSource {
    /// The flow file.
    pub path: PathBuf,
    /// Its text when it was loaded.
    pub text: Arc<str>,
    /// Where `name:` is, when the name is written.
    pub name_span: Option<sluice_flow::Span>,
    /// Where `trigger:` is.
    pub trigger_span: Option<sluice_flow::Span>,
}

impl FlowSource {
    /// The source of a loaded flow.
    pub fn of(loaded: &sluice_flow::LoadedFlow) -> Self {
        FlowSource {
            path: loaded.path.clone(),
            text: loaded.source.as_str().into(),
            name_span: loaded.file.name.as_ref().and_then(sluice_flow::Span::of),
            trigger_span: sluice_flow::Span::of(&loaded.file.trigger),
        }
    }

    /// A diagnostic at a position in this text.
    pub fn diagnostic(
        &self,
        span: Option<sluice_flow::Span>,
        message: impl Into<String>,
    ) -> sluice_flow::Diagnostic {
        sluice_flow::Diagnostic::at(&self.path, &self.text, span, message)
    }
}

/// How [`CompiledFlow::run`] treats a message: live (sinks written, failures logged and
/// dead-lettered) or dry (`tests:`, `sluice exec`: deliveries and final payloads recorded,
/// nothing written, nothing logged as a failure).
#[derive(Clone, Copy)]
pub(crate) struct Mode<'a> {
    /// The caller wants the final payload back (request-reply).
    pub(crate) want_reply: bool,
    /// A failure goes to the dead letter (the top-level message, or a split child that
    /// dead-letters itself).
    pub(crate) dead_letter: bool,
    /// A dry run, recorded here.
    pub(crate) dry: Option<&'a Recorder>,
}

impl<'a> Mode<'a> {
    /// A live run.
    pub(crate) fn live(want_reply: bool) -> Self {
        Mode {
            want_reply,
            dead_letter: true,
            dry: None,
        }
    }

    /// A dry run recorded by `recorder`.
    pub(crate) fn dry(recorder: &'a Recorder) -> Self {
        Mode {
            want_reply: false,
            dead_letter: false,
            dry: Some(recorder),
        }
    }
}

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
    /// `owner:`.
    pub owner: Option<String>,
    /// `tags:`.
    pub tags: Vec<String>,
    /// What the registry knows of the trigger: description, claim, broker, restart key.
    pub trigger_info: crate::connector::TriggerInfo,
    /// The flow file's text this version was built from (for later diagnostics).
    pub source: FlowSource,
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
    /// `sluice_sink_write_duration_seconds` of each sink (and `dead_letter`), made once.
    pub sink_latency: HashMap<String, metrics::Histogram>,
    /// The folder of a `file` dead-letter sink (listed by the admin API).
    pub dead_letter_folder: Option<PathBuf>,
    /// `errors.dead_letter_answered`: dead-letter failures already answered to the caller.
    pub dead_letter_answered: bool,
    /// `errors.retry`.
    pub retry: RetryConfig,
    /// `tests:`.
    pub tests: Vec<CompiledTest>,
    /// Schema and script files this version was built from (a change reloads the flow).
    pub dependencies: Vec<PathBuf>,
    /// `errors.circuit_breaker`: one breaker per sink.
    pub breakers: Option<Breakers>,
    /// Flows this one runs with `call`, with where (for cycle diagnostics).
    pub calls: Vec<(String, Option<sluice_flow::Span>)>,
    /// The kind of its first top-level step that forks a message (`split`, `aggregate`),
    /// if any: such a flow cannot be called, since a call returns one result.
    pub forks: Option<&'static str>,
    /// Steps with state across messages, told when the flow stops or is replaced.
    pub stateful: Vec<Arc<dyn crate::steps::Stateful>>,
    /// Problems that do not stop the flow, such as a script whose last call's result is
    /// ignored (printed by `sluice check`).
    pub warnings: Vec<sluice_flow::Diagnostic>,
    /// Whether every step and sink (the dead letter too) does local, bounded work, so that
    /// a trigger reading on a blocking thread may run a message there, to its end
    /// ([`crate::Inlet::process_here`]).
    pub in_place: bool,
    /// `order_by`: the key whose messages run one at a time, in arrival order.
    pub order_by: Option<crate::expr::Expr>,
    /// Every step, nested ones included, by the label metrics and errors use.
    pub step_list: Vec<crate::compile::StepInfo>,
}

impl CompiledFlow {
    /// The input contract (at the start), the steps from `start`, and the output contract
    /// of every delivery when the steps ran to the end.
    pub(crate) async fn steps_from(
        &self,
        exec: &mut Exec,
        start: usize,
    ) -> Result<(Control, usize), FlowError> {
        let probe = exec.probe.clone().filter(|p| p.tracing());
        if start == 0
            && let Some(probe) = &probe
        {
            let mut input = crate::probe::entry(
                "input",
                None,
                exec.payload.json().ok().cloned(),
                &Meta::new(),
                &exec.meta,
            );
            input.step = "input".to_owned();
            probe.record(input);
        }
        if start == 0 && !exec.dry && crate::tap::active() {
            crate::tap::offer("input", exec, None);
        }
        if start == 0
            && let Some(contract) = &self.input_contract
        {
            let checked = exec
                .payload
                .json()
                .map_err(|e| FlowError::new(ErrorKind::Transform, e))
                .and_then(|json| contract.check(json));
            if let Err(e) = checked {
                trace_error(probe.as_ref(), "contract.input", &e);
                return Err(e.at_step("contract.input"));
            }
        }
        let (control, at) = self.steps.run_from(start, exec).await?;
        // `End` (a `stop`, a `reply` in `catch`) is the same as having run every step.
        if matches!(control, Control::Continue | Control::End)
            && let Some(contract) = &self.output_contract
        {
            for delivery in &mut exec.deliveries {
                let checked = delivery
                    .payload
                    .json()
                    .map_err(|e| FlowError::new(ErrorKind::Transform, e))
                    .and_then(|json| contract.check(json));
                if let Err(e) = checked {
                    trace_error(probe.as_ref(), "contract.output", &e);
                    return Err(e.at_step("contract.output"));
                }
            }
        }
        Ok((control, at))
    }

    /// Runs one message end to end, including sink writes, retries and the dead letter.
    pub async fn handle(&self, message: Message, want_reply: bool) -> Outcome {
        match self.process(message, want_reply, None).await {
            Some(outcome) => outcome,
            None => Outcome::Failed(Box::new(abandoned(self, "-"))),
        }
    }

    /// Runs one message end to end for a dead-letter replay: like [`CompiledFlow::handle`],
    /// except that a failure is not dead-lettered again (the entry being replayed keeps it,
    /// with the new error appended).
    pub async fn replay(&self, message: Message) -> Outcome {
        let Message { payload, meta } = message;
        let mode = Mode {
            want_reply: false,
            dead_letter: false,
            dry: None,
        };
        match self.run(Exec::new(payload, meta), 0, mode).await {
            Some(outcome) => outcome,
            None => Outcome::Failed(Box::new(abandoned(self, "-"))),
        }
    }

    /// Runs one message end to end under a hold (its worker slot and batch). `None` means
    /// the message was abandoned (an aggregate group dropped at shutdown): its acker must
    /// be dropped unacknowledged so that the source redelivers it.
    pub async fn process(
        &self,
        message: Message,
        want_reply: bool,
        hold: Option<Hold>,
    ) -> Option<Outcome> {
        self.process_for(message, want_reply, hold, None).await
    }

    /// [`CompiledFlow::process`] for a message whose caller waits for the answer: no sink
    /// is written once the caller was told that nothing was delivered, and a failure
    /// answered to it is dead-lettered only with `errors.dead_letter_answered`.
    pub async fn process_for(
        &self,
        message: Message,
        want_reply: bool,
        hold: Option<Hold>,
        caller: Option<Caller>,
    ) -> Option<Outcome> {
        if let Some(why) = message.undecodable_reason() {
            let error = FlowError::permanent(ErrorKind::Trigger, why.to_owned());
            let message_id = message.meta.message_id().to_owned();
            let meta = message.meta.clone();
            let original = Some((message.payload, message.meta));
            let keep = self.keeps_failure(caller.as_ref());
            let outcome = self
                .fail(error, 1, &meta, original, keep, Mode::live(false))
                .await;
            if !outcome.dead_lettered() {
                tracing::error!(flow = %self.name, message_id = %message_id,
                    "the body cannot be read and the flow has no working dead letter: the message is acknowledged at its source and dropped; add `errors: dead_letter:` to keep such messages");
            }
            return Some(outcome);
        }
        let Message { payload, meta } = message;
        let mut exec = Exec::new(payload, meta);
        exec.hold = hold;
        exec.caller = caller;
        self.run(exec, 0, Mode::live(want_reply)).await
    }

    /// The message as it arrived at step `start`, kept for the dead letter: only when this
    /// run dead-letters its failures and the flow has a dead letter (a copy costs).
    fn original(&self, exec: &Exec, mode: Mode<'_>) -> Option<(Payload, Arc<Meta>)> {
        self.dead_letter
            .as_ref()
            .filter(|_| mode.dead_letter)
            .map(|_| (exec.payload.snapshot(), exec.meta.clone()))
    }

    /// Whether a failure goes to the dead letter: always for one-way sources; for a caller
    /// that is (or was) answered the error, only with `errors.dead_letter_answered`, so a
    /// client of a public endpoint cannot fill the dead letter with its own bad requests.
    /// A caller that gave up while the sinks were written was not told the failure, so
    /// that failure is always kept.
    fn keeps_failure(&self, caller: Option<&Caller>) -> bool {
        self.dead_letter_answered || !caller.is_some_and(Caller::answers_failure)
    }

    /// Runs a message from step `start` on: steps, deliveries, and (when `mode.dead_letter`)
    /// the dead letter on failure. Live runs and dry runs both take this path; a dry run's
    /// deliveries and final payloads go to its recorder instead of the sinks. Not boxed: a
    /// message's future lives in its task, or on the caller's stack for a dry run; only the
    /// rare paths are (a fork, which recurses into this, and a failure). Boxed, it was a
    /// second allocation per message of over 1 KiB, for which glibc's malloc consolidates
    /// its free lists: 5% of a dry run's instructions in `cargo bench --bench pipeline`.
    pub(crate) async fn run(
        &self,
        mut exec: Exec,
        start: usize,
        mode: Mode<'_>,
    ) -> Option<Outcome> {
        let original = self.original(&exec, mode);
        let (error, attempts) = match self.steps_from(&mut exec, start).await {
            Ok((Control::Drop, _)) => {
                tracing::debug!(flow = %self.name, message_id = %exec.meta.message_id(), "filtered");
                exec.finish(true);
                if let Some(recorder) = mode.dry {
                    recorder.end(Control::Drop, exec);
                }
                return Some(Outcome::Filtered);
            }
            Ok((Control::Fork, at)) => {
                // Boxed, like the failure below: the rare paths' futures would otherwise
                // make every message's future as large as theirs (a large allocation
                // per message; glibc's malloc then consolidates its free lists).
                return Box::pin(self.forked(exec, at, mode)).await;
            }
            Ok((Control::Continue | Control::End, _)) if mode.dry.is_some() => {
                // A dry run writes nothing: the recorder keeps what the sinks would get.
                exec.finish(true);
                if let Some(recorder) = mode.dry {
                    recorder.end(Control::Continue, exec);
                }
                return Some(Outcome::Delivered(None));
            }
            Ok((Control::Continue | Control::End, _)) => match reply(&mut exec, mode.want_reply) {
                Err(error) => (error, 1),
                Ok(reply) => {
                    if exec.deliveries.is_empty() {
                        exec.finish(true);
                        return Some(Outcome::Completed(reply));
                    }
                    let deliveries = std::mem::take(&mut exec.deliveries);
                    match self
                        .deliver_for(exec.caller.as_ref(), &exec.meta, deliveries)
                        .await
                    {
                        Ok(()) => {
                            exec.finish(true);
                            return Some(Outcome::Delivered(reply));
                        }
                        Err(failed) => failed,
                    }
                }
            },
            Err(error) => {
                let attempts = error.attempts.max(1);
                (error, attempts)
            }
        };
        exec.finish(false);
        if let Some(recorder) = mode.dry {
            recorder.failed(&mut exec);
        }
        let keep = mode.dead_letter && self.keeps_failure(exec.caller.as_ref());
        Some(Box::pin(self.fail(error, attempts, &exec.meta, original, keep, mode)).await)
    }

    /// Runs a message for a `call` from another flow: contracts, steps and (unless `dry`)
    /// deliveries, without this flow's dead letter (the caller handles the error). `None`:
    /// this flow filtered the message.
    pub async fn call(
        &self,
        payload: Payload,
        meta: Meta,
        dry: bool,
        probe: Option<crate::probe::Probe>,
    ) -> Result<Option<Payload>, FlowError> {
        let mut exec = Exec::new(payload, Arc::new(meta));
        exec.dry = dry;
        exec.probe = probe;
        let result = self.steps_from(&mut exec, 0).await;
        let result = match result {
            Err(e) => Err(e),
            Ok((Control::Drop, _)) => Ok(None),
            Ok((Control::Fork, _)) => Err(FlowError::permanent(
                ErrorKind::Transform,
                "a called flow cannot `split` or `aggregate`",
            )),
            Ok((Control::Continue | Control::End, _)) if dry || exec.deliveries.is_empty() => {
                // A dry run notes what the called flow would have written, by
                // `<flow>/<sink>`.
                if let Some(probe) = exec.probe.as_ref().filter(|_| dry) {
                    for delivery in &mut exec.deliveries {
                        let payload = crate::dry_run::shown(&mut delivery.payload);
                        for sink in delivery.sinks.iter() {
                            probe.sent(sink, payload.clone());
                        }
                    }
                }
                Ok(Some(exec.payload.snapshot()))
            }
            Ok((Control::Continue | Control::End, _)) => self
                .deliver(&exec.meta, &exec.deliveries)
                .await
                .map(|()| Some(exec.payload.snapshot()))
                .map_err(|(e, _)| e),
        };
        exec.finish(result.is_ok());
        result
    }
}

/// A contract's error joins the trace, with the payload it was checked against.
fn trace_error(probe: Option<&crate::probe::Probe>, step: &str, e: &FlowError) {
    if let Some(probe) = probe {
        probe.record(crate::probe::TraceEntry {
            step: step.to_owned(),
            error: Some(crate::probe::TraceError {
                kind: e.kind,
                message: e.message.clone(),
            }),
            ..Default::default()
        });
    }
}

impl CompiledFlow {
    /// Tells every stateful step that the flow stops (aggregates complete or abandon their
    /// open groups).
    pub fn stop_stateful(&self) {
        for step in &self.stateful {
            step.stop();
        }
    }

    /// Tells the stateful steps of this (replaced) version whose state the next version
    /// does not share that they are retired: their open groups complete now.
    pub fn retire(&self, next: &CompiledFlow) {
        for step in &self.stateful {
            if !next.stateful.iter().any(|n| n.same_state(step.as_ref())) {
                step.retire();
            }
        }
    }
}
