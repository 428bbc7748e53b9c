//! `tests:` cases and dry runs (`sluice test`, `sluice exec`, and the gate of every reload),
//! and [`TestInlet`], which lets a connector's own tests drive its trigger and acker
//! in-process with the outcome they choose.

use crate::connector::{Envelope, Failure, Health, Inlet, Outcome, Outgoing};
use crate::error::{ErrorEnvelope, ErrorKind, FlowError};
use crate::flow::{CompiledFlow, Executed};
use crate::message::{Ids, MESSAGE_ID, Message, Meta};
use crate::probe::{Mock, Probe, Sent, TraceEntry, render_trace};
use crate::steps::Control;
use serde::Serialize;
use serde_json::Value;
use sluice_flow::Span;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

mod expect;

/// Metadata key set on the messages of `tests:` cases.
pub const TEST_MARKER: &str = "sluice.test";

/// A test case, checked at compile time (its sinks and mocked steps exist, its error kinds
/// are known).
#[derive(Debug, Clone)]
pub struct CompiledTest {
    /// Its name.
    pub name: String,
    /// Where it is in the flow file.
    pub span: Option<Span>,
    /// The payload given to the first step.
    pub input: Value,
    /// Extra metadata.
    pub meta: BTreeMap<String, String>,
    /// The sink that must receive the message.
    pub sink: Option<String>,
    /// A subset of the payload delivered there (or of the final payload).
    pub payload: Option<Value>,
    /// The message must be filtered (or must not).
    pub filtered: Option<bool>,
    /// The message must fail so.
    pub error: Option<ExpectedError>,
    /// The answer's HTTP status.
    pub status: Option<u16>,
    /// Headers the answer must carry.
    pub headers: BTreeMap<String, String>,
    /// Exactly these deliveries, in order: sink and an optional payload subset.
    pub deliveries: Option<Vec<(String, Option<Value>)>>,
    /// What must have been sent to mocks and sinks.
    pub sent: Vec<ExpectedSent>,
    /// What answers in place of `enrich` and `call` steps and sinks.
    pub mocks: BTreeMap<String, Mock>,
}

/// The error a test case expects.
#[derive(Debug, Clone)]
pub struct ExpectedError {
    /// Its kind.
    pub kind: ErrorKind,
    /// A contract violation at this JSON pointer.
    pub pointer: Option<String>,
    /// A part of its message.
    pub message: Option<String>,
}

/// What a test case expects was sent somewhere.
#[derive(Debug, Clone)]
pub struct ExpectedSent {
    /// A sink's name, or an `enrich` or `call` step's key.
    pub to: String,
    /// A subset one of the payloads sent there matches.
    pub payload: Option<Value>,
    /// Exactly this many sends.
    pub count: Option<usize>,
}

/// What `sluice exec` prints: the result of one message, with nothing written.
#[derive(Debug, Serialize)]
pub struct DryRun {
    /// `delivered`, `completed`, `filtered` or `error`.
    pub outcome: &'static str,
    /// The payload after the last step; on an error, the payload as it was at the failing
    /// step.
    pub payload: Value,
    /// Sinks that would receive the message, in order.
    pub route: Vec<String>,
    /// What each sink would receive and where it would write it.
    pub deliveries: Vec<DryDelivery>,
    /// The status and headers `reply` steps set, when they set any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<DryReply>,
    /// What `enrich` and `call` steps sent (to their mocks, or with `--live` to the real
    /// endpoint), and what called flows would have written (`<flow>/<sink>`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<Sent>,
    /// The error, when the outcome is `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DryError>,
    /// Step by step, with `--trace` (and for a failed test).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<TraceEntry>>,
}

/// The answer's status and headers, as `reply` steps set them.
#[derive(Debug, Serialize)]
pub struct DryReply {
    /// The status (200 unless a `reply` set another).
    pub status: u16,
    /// Headers, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// One delivery of a dry run.
#[derive(Debug, Serialize)]
pub struct DryDelivery {
    /// The sink's name.
    pub sink: String,
    /// The payload it would receive.
    pub payload: Value,
    /// Where it would write (a file path, `stdout`, …).
    pub target: String,
    /// A mock answered in place of the sink.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mocked: bool,
}

/// The error of a dry run.
#[derive(Debug, Serialize)]
pub struct DryError {
    /// The error kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
    /// The step.
    pub step: Option<String>,
    /// Contract violations.
    pub violations: Vec<crate::error::Violation>,
}

impl From<FlowError> for DryError {
    fn from(e: FlowError) -> Self {
        DryError {
            kind: e.kind,
            message: e.message,
            step: e.step,
            violations: e.violations,
        }
    }
}

/// Runs one message through the steps and asks each sink where it would write; writes
/// nothing, and an `enrich` step without a mock fails (see [`dry_run_probed`]).
pub async fn dry_run(flow: &CompiledFlow, payload: Value, meta: Meta) -> DryRun {
    let probe = Probe::new(BTreeMap::new(), false, false, false);
    dry_run_probed(flow, payload, meta, probe).await
}

/// [`dry_run`] watched by `probe`: its mocks answer for `enrich` and `call` steps and
/// sinks, what was sent to them is reported, and a tracing probe's trace is included.
pub async fn dry_run_probed(
    flow: &CompiledFlow,
    payload: Value,
    meta: Meta,
    probe: Probe,
) -> DryRun {
    let message = Message::new(&flow.name, payload, meta);
    let mut run = DryRun {
        outcome: "error",
        payload: Value::Null,
        route: Vec::new(),
        deliveries: Vec::new(),
        reply: None,
        sent: Vec::new(),
        error: None,
        trace: None,
    };
    match flow.execute_probed(message, Some(probe.clone())).await {
        Ok(executed) => deliver(flow, executed, &probe, &mut run).await,
        Err(failure) => {
            run.payload = failure.payload.unwrap_or(Value::Null);
            run.error = Some(failure.error.into());
        }
    }
    run.sent = probe.sent_list();
    if probe.tracing() {
        run.trace = Some(probe.trace());
    }
    run
}

/// The sinks' part of a dry run: where each delivery would go, and what their mocks say.
async fn deliver(flow: &CompiledFlow, executed: Executed, probe: &Probe, run: &mut DryRun) {
    let mut final_payload = executed.payload;
    run.payload = crate::dry_run::shown(&mut final_payload);
    if executed.reply.status.is_some() || !executed.reply.headers.is_empty() {
        run.reply = Some(DryReply {
            status: executed.reply.status.unwrap_or(200),
            headers: executed.reply.headers.clone(),
        });
    }
    if executed.control == Control::Drop {
        run.outcome = "filtered";
        return;
    }
    for delivery in executed.deliveries {
        for sink_name in delivery.sinks.iter() {
            let mut out = Outgoing {
                payload: delivery.payload.clone(),
                meta: executed.meta.clone(),
            };
            let target = match flow.sinks.get(sink_name).map(|s| s.target(&mut out)) {
                Some(Ok(target)) => target,
                Some(Err(e)) => {
                    run.error = Some(e.at_step(format!("sink {sink_name}")).into());
                    return;
                }
                None => String::new(),
            };
            let payload = crate::dry_run::shown(&mut out.payload);
            let mock = probe.mock(sink_name);
            run.route.push(sink_name.clone());
            run.deliveries.push(DryDelivery {
                sink: sink_name.clone(),
                payload,
                target,
                mocked: mock.is_some(),
            });
            if let Some(mock) = mock {
                let what = format!("sink `{sink_name}`");
                if let Err(e) = mock.answer(&what, ErrorKind::Sink, None).await {
                    run.error = Some(e.at_step(format!("sink {sink_name}")).into());
                    return;
                }
            }
        }
    }
    run.outcome = if run.deliveries.is_empty() {
        "completed"
    } else {
        "delivered"
    };
}

/// Why a test case failed, with the trace of its message.
#[derive(Debug)]
pub struct TestFailure {
    /// What differed.
    pub reason: String,
    /// The message's trace, one step a line.
    pub trace: String,
}

impl std::fmt::Display for TestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Runs one test case (its mocks in place, nothing reaching the outside world); `Err` says
/// what differed, with the trace.
pub async fn run_test(flow: &CompiledFlow, test: &CompiledTest) -> Result<(), TestFailure> {
    let mut meta = test.meta.clone();
    meta.insert(TEST_MARKER.to_owned(), "true".to_owned());
    meta.entry(MESSAGE_ID.to_owned())
        .or_insert_with(|| format!("test-{}", test.name.replace(' ', "-")));
    let probe = Probe::new(test.mocks.clone(), true, false, true);
    let run = dry_run_probed(flow, test.input.clone(), meta, probe).await;
    expect::check_test(test, &run).map_err(|reason| TestFailure {
        reason,
        trace: render_trace(run.trace.as_deref().unwrap_or_default()),
    })
}

/// Objects match when every expected key matches; arrays element by element with equal
/// length; scalars by equality (numbers by value, so `2` matches `2.0`).
pub fn subset_match(expected: &Value, actual: &Value, pointer: &str) -> Result<(), String> {
    let at = if pointer.is_empty() { "/" } else { pointer };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let child = format!("{pointer}/{key}");
                match a.get(key) {
                    Some(actual) => subset_match(value, actual, &child)?,
                    None => {
                        return Err(format!("{child}: expected {value}, but the key is missing"));
                    }
                }
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{at}: expected {} items, got {}", e.len(), a.len()));
            }
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                subset_match(e, a, &format!("{pointer}/{i}"))?;
            }
            Ok(())
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => Ok(()),
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{at}: expected {e}, got {a}")),
    }
}

/// A flow's inlet with the test in the flow's place: a connector test runs its trigger on
/// [`TestInlet::inlet`], takes each envelope the trigger sends with [`TestInlet::next`], and
/// settles it with the outcome it wants ([`TestInlet::delivered`], [`TestInlet::failed`], …)
/// through the envelope's own acker. What the source then does (acknowledge, redeliver,
/// answer the writer) is observable at once, with no engine, timer or sleep in between.
pub struct TestInlet {
    flow: String,
    /// Handed out once: while the test held a sender, the queue could never report that the
    /// trigger has stopped.
    inlet: Option<Inlet>,
    rx: mpsc::Receiver<Envelope>,
    health: Health,
}

impl TestInlet {
    /// An inlet for flow `flow` whose queue holds `capacity` envelopes (the trigger waits when
    /// it is full, as it would for a busy flow).
    pub fn new(flow: &str, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        let health: Health = Arc::new(Mutex::new(None));
        TestInlet {
            flow: flow.to_owned(),
            inlet: Some(Inlet::new(flow, tx, health.clone())),
            rx,
            health,
        }
    }

    /// The inlet to hand the trigger's `run`, given out once (clone it for more); `None`
    /// the second time.
    pub fn inlet(&mut self) -> Option<Inlet> {
        self.inlet.take()
    }

    /// The next envelope the trigger sends; `None` once the trigger has stopped and dropped
    /// every copy of the inlet.
    pub async fn next(&mut self) -> Option<Envelope> {
        self.rx.recv().await
    }

    /// An envelope already sent, without waiting; `None` when the queue is empty now.
    pub fn try_next(&mut self) -> Option<Envelope> {
        self.rx.try_recv().ok()
    }

    /// Why the trigger reported itself unhealthy; `None` while it is healthy.
    pub fn unhealthy(&self) -> Option<String> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every delivery confirmed by its sinks (no reply asked for).
    pub fn delivered() -> Outcome {
        Outcome::Delivered(None)
    }

    /// The message failed with `error`, after `attempts` attempts; `dead_lettered` says
    /// whether a dead letter took it. Unless it did (or the error is of kind `trigger`), the
    /// outcome is not settled: the source must deliver the message again.
    pub fn failed(
        &self,
        message: &Message,
        error: FlowError,
        attempts: u32,
        dead_lettered: bool,
    ) -> Outcome {
        let envelope = ErrorEnvelope::new(
            &self.flow,
            "test",
            message.meta.message_id(),
            &error,
            attempts,
        );
        Outcome::Failed(Box::new(Failure {
            error,
            envelope,
            dead_lettered,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching() {
        let actual = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
        assert!(subset_match(&json!({"b": {"d": "x"}}), &actual, "").is_ok());
        assert!(subset_match(&json!({"a": 1.0}), &actual, "").is_ok());
        let err = subset_match(&json!({"b": {"c": [1]}}), &actual, "").unwrap_err();
        assert!(err.contains("/b/c"), "{err}");
        let err = subset_match(&json!({"z": 1}), &actual, "").unwrap_err();
        assert!(err.contains("/z"), "{err}");
    }

    #[tokio::test]
    async fn the_test_inlet_hands_over_envelopes_and_builds_outcomes() {
        let mut test = TestInlet::new("t", 2);
        let inlet = test.inlet().expect("the inlet, the first time");
        assert!(test.inlet().is_none(), "given out once");
        assert_eq!(inlet.flow(), "t");
        inlet.set_unhealthy("broker away");
        assert_eq!(test.unhealthy().as_deref(), Some("broker away"));
        inlet.set_healthy();
        assert_eq!(test.unhealthy(), None);

        struct Noted(mpsc::UnboundedSender<bool>);
        #[async_trait::async_trait]
        impl crate::connector::Acker for Noted {
            async fn ack(self: Box<Self>, outcome: Outcome) {
                let _ = self.0.send(outcome.settled());
            }
        }
        let (noted, mut settled) = mpsc::unbounded_channel();
        for id in ["m-1", "m-2"] {
            let meta = Meta::from([(MESSAGE_ID.to_owned(), id.to_owned())]);
            let envelope = Envelope::new(
                Message::new("t", json!({"id": id}), meta),
                Box::new(Noted(noted.clone())),
            );
            assert!(inlet.send(envelope).await.is_ok());
        }
        drop(inlet);

        let first = test.next().await.expect("the first envelope");
        assert_eq!(first.message.meta.message_id(), "m-1");
        let error = FlowError::new(ErrorKind::Sink, "sink away");
        let outcome = test.failed(&first.message, error, 3, false);
        let Outcome::Failed(failure) = &outcome else {
            panic!("a failure: {outcome:?}");
        };
        assert_eq!(failure.envelope.message_id, "m-1");
        assert_eq!(failure.envelope.attempts, 3);
        assert_eq!(failure.envelope.flow, "t");
        first.ack.ack(outcome).await;
        assert_eq!(
            settled.recv().await,
            Some(false),
            "a retryable failure is not settled"
        );

        let second = test.try_next().expect("the second envelope is there");
        assert_eq!(second.message.meta.message_id(), "m-2");
        second.ack.ack(TestInlet::delivered()).await;
        assert_eq!(settled.recv().await, Some(true), "a delivery is settled");
        assert!(
            test.next().await.is_none(),
            "every inlet is gone: no more envelopes"
        );
    }
}
