//! A compiled flow version and the path of one message through it:
//! input contract → steps → output contract → sinks (with retry) → dead letter → outcome.

use crate::breaker::Breakers;
use crate::connector::{Caller, Failure, Outcome, Outgoing, Reply, Sink, Trigger};
use crate::contract::Contract;
use crate::error::{ErrorEnvelope, ErrorKind, FlowError};
use crate::hold::Hold;
use crate::message::{Message, Meta, Payload};
use crate::retry::with_retry;
use crate::steps::{Control, Delivery, Exec, Fork, Steps};
use crate::testing::CompiledTest;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use serde_json::json;
use sluice_flow::{RetryConfig, TriggerConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use crate::dry_run::Executed;
pub use crate::workers::run_workers;

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
    /// Steps with state across messages, told when the flow stops or is replaced.
    pub stateful: Vec<Arc<dyn crate::steps::Stateful>>,
    /// Problems that do not stop the flow, such as a script whose last call's result is
    /// ignored (printed by `sluice check`).
    pub warnings: Vec<sluice_flow::Diagnostic>,
}

impl CompiledFlow {
    /// The input contract (at the start), the steps from `start`, and the output contract
    /// of every delivery when the steps ran to the end.
    pub(crate) async fn steps_from(
        &self,
        exec: &mut Exec,
        start: usize,
    ) -> Result<(Control, usize), FlowError> {
        if start == 0
            && let Some(contract) = &self.input_contract
        {
            let json = exec
                .payload
                .json()
                .map_err(|e| FlowError::new(ErrorKind::Transform, e).at_step("contract.input"))?;
            contract
                .check(json)
                .map_err(|e| e.at_step("contract.input"))?;
        }
        let (control, at) = self.steps.run_from(start, exec).await?;
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
        Ok((control, at))
    }

    /// Runs one message end to end, including sink writes, retries and the dead letter.
    pub async fn handle(&self, message: Message, want_reply: bool) -> Outcome {
        match self.process(message, want_reply, None).await {
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
            let message_id = message.id().to_owned();
            let meta = message.meta.clone();
            let original = Some((message.payload, message.meta));
            let keep = self.keeps_failure(caller.as_ref());
            let outcome = self.fail(error, 1, &meta, original, keep).await;
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
        self.run(exec, 0, want_reply, true).await
    }

    /// Whether a failure goes to the dead letter: always for one-way sources; for a caller
    /// that is (or was) answered the error, only with `errors.dead_letter_answered`, so a
    /// client of a public endpoint cannot fill the dead letter with its own bad requests.
    /// A caller that gave up while the sinks were written was not told the failure, so
    /// that failure is always kept.
    fn keeps_failure(&self, caller: Option<&Caller>) -> bool {
        self.dead_letter_answered || !caller.is_some_and(Caller::answers_failure)
    }

    /// Runs a message from step `start` on: steps, deliveries, and (when `dead_letter`) the
    /// dead letter on failure. Boxed because split children and aggregates recurse.
    fn run(
        &self,
        mut exec: Exec,
        start: usize,
        want_reply: bool,
        dead_letter: bool,
    ) -> BoxFuture<'_, Option<Outcome>> {
        async move {
            let message_id = exec
                .meta
                .get("message_id")
                .cloned()
                .unwrap_or_else(|| "-".to_owned());
            let original = self
                .dead_letter
                .as_ref()
                .filter(|_| dead_letter)
                .map(|_| (exec.payload.snapshot(), exec.meta.clone()));
            let (error, attempts) = match self.steps_from(&mut exec, start).await {
                Ok((Control::Drop, _)) => {
                    tracing::debug!(flow = %self.name, message_id = %message_id, "filtered");
                    exec.finish(true);
                    return Some(Outcome::Filtered);
                }
                Ok((Control::Fork, at)) => {
                    return self.forked(exec, at, want_reply, dead_letter).await;
                }
                Ok((Control::Continue, _)) => match reply(&mut exec, want_reply) {
                    Err(error) => (error, 1),
                    Ok(reply) => {
                        if exec.deliveries.is_empty() {
                            exec.finish(true);
                            return Some(Outcome::Completed(reply));
                        }
                        match self
                            .deliver_for(exec.caller.as_ref(), &exec.meta, &exec.deliveries)
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
            let keep = dead_letter && self.keeps_failure(exec.caller.as_ref());
            Some(self.fail(error, attempts, &exec.meta, original, keep).await)
        }
        .boxed()
    }

    /// Writes the deliveries of `exec`, unless its caller was already told that nothing
    /// was delivered (then the message is cancelled before any sink).
    async fn deliver_for(
        &self,
        caller: Option<&Caller>,
        meta: &Arc<Meta>,
        deliveries: &[Delivery],
    ) -> Result<(), (FlowError, u32)> {
        if caller.is_some_and(|c| !c.commit()) {
            let error = FlowError::permanent(
                ErrorKind::Timeout,
                "cancelled before any sink was written: the caller had already been answered \
                 504 (nothing delivered) when the steps finished",
            );
            return Err((error, 1));
        }
        self.deliver(meta, deliveries).await
    }

    /// Logs a failed message (its ids are read from `meta`) and dead-letters it (when asked
    /// to and configured).
    async fn fail(
        &self,
        error: FlowError,
        attempts: u32,
        meta: &Meta,
        original: Option<(Payload, Arc<Meta>)>,
        dead_letter: bool,
    ) -> Outcome {
        let message_id = meta.get("message_id").map_or("-", String::as_str);
        let mut envelope =
            ErrorEnvelope::new(&self.name, &self.version, message_id, &error, attempts);
        envelope.correlation_id = meta.get("correlation_id").cloned();
        tracing::warn!(flow = %self.name, message_id = %message_id, kind = %error.kind, "message failed: {error}");
        let dead_lettered = match (&self.dead_letter, original) {
            (Some(sink), Some((payload, meta))) if dead_letter => {
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

    /// Runs a message for a `call` from another flow: contracts, steps and (unless `dry`)
    /// deliveries, without this flow's dead letter (the caller handles the error). `None`:
    /// this flow filtered the message.
    pub async fn call(
        &self,
        payload: Payload,
        meta: Meta,
        dry: bool,
    ) -> Result<Option<Payload>, FlowError> {
        let mut exec = Exec::new(payload, Arc::new(meta));
        exec.dry = dry;
        let result = self.steps_from(&mut exec, 0).await;
        let result = match result {
            Err(e) => Err(e),
            Ok((Control::Drop, _)) => Ok(None),
            Ok((Control::Fork, _)) => Err(FlowError::permanent(
                ErrorKind::Transform,
                "a called flow cannot `split` or `aggregate`",
            )),
            Ok((Control::Continue, _)) if dry || exec.deliveries.is_empty() => {
                Ok(Some(exec.payload.snapshot()))
            }
            Ok((Control::Continue, _)) => self
                .deliver(&exec.meta, &exec.deliveries)
                .await
                .map(|()| Some(exec.payload.snapshot()))
                .map_err(|(e, _)| e),
        };
        exec.finish(result.is_ok());
        result
    }

    /// Carries on after `split` (the children) or `aggregate` (the group).
    async fn forked(
        &self,
        mut exec: Exec,
        at: usize,
        want_reply: bool,
        dead_letter: bool,
    ) -> Option<Outcome> {
        match exec.fork.take() {
            Some(Fork::Split(children)) => self.run_children(exec, children, at, dead_letter).await,
            Some(Fork::Park(parked)) => self.run_parked(exec, parked, at, want_reply).await,
            None => {
                exec.finish(true);
                Some(Outcome::Completed(None))
            }
        }
    }

    /// Runs every child of a split (all at once: a child may wait in an aggregate group
    /// for its siblings), then the parent's own deliveries; combines the outcomes.
    async fn run_children(
        &self,
        mut exec: Exec,
        children: crate::steps::split::Children,
        at: usize,
        dead_letter: bool,
    ) -> Option<Outcome> {
        let original = self
            .dead_letter
            .as_ref()
            .filter(|_| dead_letter)
            .map(|_| (exec.payload.snapshot(), exec.meta.clone()));
        let fail_parent = children.fail_parent;
        // The children share the parent's hold; the parent settles when the last child does.
        let hold = exec.hold.take();
        let mut execs = children.into_execs(&exec.meta, hold.as_ref());
        drop(hold);
        // The children's sinks pass the same commit point as the parent's.
        for child in &mut execs {
            child.caller = exec.caller.clone();
        }
        let runs = execs
            .into_iter()
            .map(|child| self.run(child, at + 1, false, dead_letter && !fail_parent));
        let outcomes = join_all(runs).await;
        let mut failure: Option<Box<Failure>> = None;
        for outcome in outcomes {
            match outcome {
                None => {
                    exec.finish(false);
                    return None;
                }
                Some(Outcome::Failed(f)) if fail_parent || !f.dead_lettered => {
                    failure.get_or_insert(f);
                }
                Some(_) => {}
            }
        }
        let failed = match failure {
            Some(f) if fail_parent => Some((f.error, f.envelope.attempts)),
            Some(f) => {
                // A child failed and no dead letter took it: the parent must not be
                // acknowledged as done, or the child would be lost.
                exec.finish(false);
                return Some(Outcome::Failed(f));
            }
            None if exec.deliveries.is_empty() => {
                exec.finish(true);
                return Some(Outcome::Delivered(None));
            }
            None => self
                .deliver_for(exec.caller.as_ref(), &exec.meta, &exec.deliveries)
                .await
                .err(),
        };
        match failed {
            None => {
                exec.finish(true);
                Some(Outcome::Delivered(None))
            }
            Some((error, attempts)) => {
                exec.finish(false);
                let keep = dead_letter && self.keeps_failure(exec.caller.as_ref());
                Some(self.fail(error, attempts, &exec.meta, original, keep).await)
            }
        }
    }

    /// A message that joined an aggregate group gives back its slot and waits. The group's
    /// first member (the leader) runs the aggregated message through the rest of the steps
    /// and hands the outcome to every other member.
    async fn run_parked(
        &self,
        mut exec: Exec,
        parked: crate::steps::aggregate::Parked,
        at: usize,
        want_reply: bool,
    ) -> Option<Outcome> {
        use crate::steps::aggregate::Parked;
        if let Some(hold) = exec.hold.take() {
            hold.park();
        }
        exec.guards.clear();
        let outcome = match parked {
            Parked::Member(rx) => rx.await.ok().flatten(),
            Parked::Leader(rx) => match rx.await {
                Err(_) => None,
                Ok(closed) => {
                    let (aggregated, followers) = closed.into_parts();
                    let outcome = match aggregated {
                        Ok(next) => self.run(next, at + 1, want_reply, true).await,
                        Err((error, meta)) => Some(self.fail(error, 1, &meta, None, true).await),
                    };
                    for follower in followers {
                        let _ = follower.send(outcome.as_ref().map(replicate));
                    }
                    outcome
                }
            },
        };
        let success = outcome
            .as_ref()
            .is_some_and(|o| !matches!(o, Outcome::Failed(_)));
        exec.finish(success);
        outcome
    }

    /// Writes every delivery, each sink in parallel, retrying transient failures.
    async fn deliver(
        &self,
        meta: &Arc<Meta>,
        deliveries: &[Delivery],
    ) -> Result<(), (FlowError, u32)> {
        let mut writes = Vec::new();
        for delivery in deliveries {
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
                    meta: meta.clone(),
                };
                writes.push(self.write_guarded(sink_name, sink.as_ref(), out));
            }
        }
        let results = join_all(writes).await;
        results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    /// Writes through the sink's circuit breaker (when configured): while the circuit is
    /// open the write fails at once, or goes to the fallback sink.
    async fn write_guarded(
        &self,
        sink_name: &str,
        sink: &dyn Sink,
        out: Outgoing,
    ) -> Result<(), (FlowError, u32)> {
        let Some(breakers) = &self.breakers else {
            return self.write_with_retry(sink_name, sink, out).await;
        };
        let Some(breaker) = breakers.get(sink_name) else {
            return self.write_with_retry(sink_name, sink, out).await;
        };
        if !breaker.allow() {
            if let Some(fallback) = breakers.fallback.as_ref()
                && let Some(fb) = self.sinks.get(fallback)
            {
                tracing::debug!(flow = %self.name, sink = %sink_name, fallback = %fallback, "circuit open: writing to the fallback sink");
                return self.write_with_retry(fallback, fb.as_ref(), out).await;
            }
            return Err((
                FlowError::permanent(
                    ErrorKind::Sink,
                    format!("circuit open: sink `{sink_name}` keeps failing; not tried"),
                )
                .at_step(format!("sink {sink_name}")),
                0,
            ));
        }
        let result = self.write_with_retry(sink_name, sink, out).await;
        breaker.record(result.is_ok(), &self.name, sink_name);
        result
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
        // The original is in JSON form or was parsed when it arrived, so this holds; should
        // it not, the write fails (the source keeps the message) rather than keep a null.
        let message = match original.json() {
            Ok(message) => message.clone(),
            Err(e) => {
                tracing::error!(flow = %self.name, message_id = %envelope.message_id, "dead letter write failed: the message has no JSON form: {e}");
                return false;
            }
        };
        let payload = json!({
            "message": message,
            "meta": &*meta,
            "error": bounded(envelope),
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

/// The reply for a request-reply trigger; a payload with no JSON form (a script made a
/// function or NaN) fails the message instead of answering null.
fn reply(exec: &mut Exec, wanted: bool) -> Result<Option<Reply>, FlowError> {
    if !wanted {
        return Ok(None);
    }
    let payload = exec
        .payload
        .json()
        .map_err(|e| FlowError::permanent(ErrorKind::Transform, e).at_step("reply"))?
        .clone();
    Ok(Some(Reply {
        payload,
        status: exec.reply.status,
        headers: std::mem::take(&mut exec.reply.headers),
        message_id: exec.meta.get("message_id").cloned().unwrap_or_default(),
    }))
}

/// Violations kept in a dead-letter entry, and bytes kept of each one's message: one body
/// can break a contract in as many places as it has values, and each message may quote
/// the value, so an entry is bounded by the body size, not by body size times violations.
const DEAD_LETTER_VIOLATIONS: usize = 100;
const DEAD_LETTER_VIOLATION_TEXT: usize = 1024;

/// The envelope as a dead-letter entry holds it (its `message` still gives the full count).
fn bounded(envelope: &ErrorEnvelope) -> std::borrow::Cow<'_, ErrorEnvelope> {
    let long = |v: &crate::error::Violation| v.message.len() > DEAD_LETTER_VIOLATION_TEXT;
    if envelope.violations.len() <= DEAD_LETTER_VIOLATIONS && !envelope.violations.iter().any(long)
    {
        return std::borrow::Cow::Borrowed(envelope);
    }
    let mut copy = envelope.clone();
    copy.violations.truncate(DEAD_LETTER_VIOLATIONS);
    for v in &mut copy.violations {
        if v.message.len() > DEAD_LETTER_VIOLATION_TEXT {
            let mut end = DEAD_LETTER_VIOLATION_TEXT;
            while !v.message.is_char_boundary(end) {
                end -= 1;
            }
            v.message.truncate(end);
            v.message.push('…');
        }
    }
    std::borrow::Cow::Owned(copy)
}

/// A copy of an outcome for another member of an aggregate group.
fn replicate(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Delivered(_) => Outcome::Delivered(None),
        Outcome::Completed(_) => Outcome::Completed(None),
        Outcome::Filtered => Outcome::Filtered,
        Outcome::Failed(f) => Outcome::Failed(Box::new(Failure {
            error: f.error.clone(),
            envelope: f.envelope.clone(),
            dead_lettered: f.dead_lettered,
        })),
    }
}

fn abandoned(flow: &CompiledFlow, message_id: &str) -> Failure {
    let error = FlowError::new(
        ErrorKind::Timeout,
        "the message was abandoned while waiting in an aggregate group",
    );
    Failure {
        envelope: ErrorEnvelope::new(&flow.name, &flow.version, message_id, &error, 1),
        error,
        dead_lettered: false,
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
