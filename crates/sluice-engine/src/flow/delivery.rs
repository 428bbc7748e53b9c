//! Deliveries: sink writes (in parallel, through circuit breakers, with retries), the
//! dead letter, and the reply for a request-reply trigger.

use super::{CompiledFlow, Mode};
use crate::connector::{Caller, Failure, Outcome, Outgoing, Reply, Sink};
use crate::error::{ErrorEnvelope, ErrorKind, FlowError};
use crate::message::{Ids, Meta, Payload};
use crate::retry::with_retry;
use crate::steps::{Delivery, Exec};
use futures_util::future::join_all;
use serde_json::json;
use std::sync::Arc;

impl CompiledFlow {
    /// Writes the deliveries of a message, unless its caller was already told that nothing
    /// was delivered (then the message is cancelled before any sink). Live runs only: a dry
    /// run records its deliveries where the message ends.
    pub(super) async fn deliver_for(
        &self,
        caller: Option<&Caller>,
        meta: &Arc<Meta>,
        deliveries: Vec<Delivery>,
    ) -> Result<(), (FlowError, u32)> {
        if caller.is_some_and(|c| !c.commit()) {
            let error = FlowError::permanent(
                ErrorKind::Timeout,
                "cancelled before any sink was written: the caller had already been answered \
                 504 (nothing delivered) when the steps finished",
            );
            return Err((error, 1));
        }
        self.deliver(meta, &deliveries).await
    }

    /// The failure of a message: its envelope (ids read from `meta`). A live run logs it
    /// and dead-letters it (when asked to and configured); a dry run only reports it.
    pub(super) async fn fail(
        &self,
        error: FlowError,
        attempts: u32,
        meta: &Meta,
        original: Option<(Payload, Arc<Meta>)>,
        dead_letter: bool,
        mode: Mode<'_>,
    ) -> Outcome {
        let message_id = meta.message_id();
        let mut envelope =
            ErrorEnvelope::new(&self.name, &self.version, message_id, &error, attempts);
        envelope.correlation_id = meta.correlation_id().map(str::to_owned);
        if mode.dry.is_none() {
            tracing::warn!(flow = %self.name, message_id = %message_id, kind = %error.kind, "message failed: {error}");
        }
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

    /// Writes every delivery, each sink in parallel, retrying transient failures.
    pub(super) async fn deliver(
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
    pub(super) async fn write_guarded(
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

    pub(super) async fn write_with_retry(
        &self,
        sink_name: &str,
        sink: &dyn Sink,
        out: Outgoing,
    ) -> Result<(), (FlowError, u32)> {
        let started = std::time::Instant::now();
        let result = with_retry(&self.retry, &self.name, sink_name, || {
            let mut out = out.clone();
            async move { sink.write(&mut out).await }
        })
        .await;
        // Retries included: how long the message waited for this sink.
        if let Some(histogram) = self.sink_latency.get(sink_name) {
            histogram.record(started.elapsed().as_secs_f64());
        }
        result.map_err(|(e, attempts)| (e.at_step(format!("sink {sink_name}")), attempts))
    }

    pub(super) async fn dead_letter_write(
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
pub(super) fn reply(exec: &mut Exec, wanted: bool) -> Result<Option<Reply>, FlowError> {
    if !wanted {
        return Ok(None);
    }
    let payload = exec
        .payload
        .json()
        .map_err(|e| FlowError::permanent(ErrorKind::Transform, e).at_step("reply"))?
        .clone();
    let xml = match exec.reply.body.take() {
        Some(crate::steps::ReplyBody::Xml(root)) => {
            Some(sluice_xml::to_xml(&payload, root.as_deref()).map_err(|e| {
                FlowError::permanent(
                    ErrorKind::Transform,
                    format!("the reply has no XML form: {e}"),
                )
                .at_step("reply")
            })?)
        }
        Some(crate::steps::ReplyBody::Json) | None => None,
    };
    Ok(Some(Reply {
        payload,
        status: exec.reply.status,
        headers: std::mem::take(&mut exec.reply.headers),
        xml,
        message_id: exec.meta.message_id().to_owned(),
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
