//! The contract between the engine and the connectors: sinks, triggers, acknowledgements.
//!
//! A connector does I/O only. Queues, concurrency, retries, dead letters and acks are the
//! engine's, written once here and in [`crate::flow`].

use crate::error::{ErrorEnvelope, FlowError};
use crate::message::{Message, Meta, Payload};
use crate::workers::Workers;
use async_trait::async_trait;
use sluice_flow::{Diagnostic, LoadedFlow, SinkConfig, Span, Spanned, TriggerConfig};

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod info;

pub use info::{InputFormat, SinkInfo, TriggerInfo, TriggerKey};

/// A message on its way to one sink.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The payload to write.
    pub payload: Payload,
    /// The message metadata (for templates and headers).
    pub meta: Arc<Meta>,
}

/// A destination. `write` returns only once the data is durably handed over.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Writes one message. Retryable errors are retried by the engine.
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError>;

    /// Where `write` would put this message (for `sluice exec`), without writing anything.
    fn target(&self, out: &mut Outgoing) -> Result<String, FlowError>;

    /// Whether a write is local and bounded (a file into a folder), so that a message may be
    /// written on the thread that read it ([`crate::in_place`]); the sink then writes there,
    /// without a hand-off, when [`crate::in_place::may_block`] says so. Sinks that wait for
    /// a server say no.
    fn in_place(&self) -> bool {
        false
    }
}

/// How one message ended, reported back to its trigger.
#[derive(Debug)]
pub enum Outcome {
    /// Every delivery was confirmed by its sinks. Carries the final payload when the
    /// envelope asked for a reply.
    Delivered(Option<Reply>),
    /// The steps ended without any delivery. Carries the final payload when asked for.
    Completed(Option<Reply>),
    /// A filter dropped the message.
    Filtered,
    /// The message failed; it may have been dead-lettered.
    Failed(Box<Failure>),
}

impl Outcome {
    /// Whether the source is done with the message: it was delivered, completed, filtered
    /// or dead-lettered, or its body cannot be read (no redelivery could change that; see
    /// [`Message::undecodable`](crate::Message::undecodable)). Otherwise the source should
    /// deliver it again.
    pub fn settled(&self) -> bool {
        match self {
            Outcome::Delivered(_) | Outcome::Completed(_) | Outcome::Filtered => true,
            Outcome::Failed(failure) => {
                failure.dead_lettered || failure.error.kind == crate::ErrorKind::Trigger
            }
        }
    }

    /// Whether the message failed and the dead letter took it.
    pub fn dead_lettered(&self) -> bool {
        matches!(self, Outcome::Failed(failure) if failure.dead_lettered)
    }
}

/// The final payload of a message, for request-reply triggers (the HTTP response body).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The payload after the last step.
    pub payload: serde_json::Value,
    /// A status set by a `reply` step.
    pub status: Option<u16>,
    /// Headers set by a `reply` step.
    pub headers: Vec<(String, String)>,
    /// The body as XML, when a `reply` step chose `format: xml`; else the payload is answered
    /// as JSON. Written before the sinks, so that a payload without an XML form fails the
    /// message instead of its answer.
    pub xml: Option<Vec<u8>>,
    /// The message id.
    pub message_id: String,
}

/// The details of a failed message.
#[derive(Debug)]
pub struct Failure {
    /// The error.
    pub error: FlowError,
    /// The envelope written to the dead letter and beside rejected files.
    pub envelope: ErrorEnvelope,
    /// Whether the dead-letter sink confirmed it.
    pub dead_lettered: bool,
}

/// Receives the outcome of one message; the trigger acknowledges its source in it.
///
/// The engine awaits `ack` before it takes the next message on that worker, so the number
/// of messages between "sinks confirmed" and "source acknowledged" never exceeds the
/// flow's concurrency. A dropped acker (shutdown) means "not processed": the source must
/// redeliver.
#[async_trait]
pub trait Acker: Send {
    /// Acknowledges (or rejects) the source of the message.
    async fn ack(self: Box<Self>, outcome: Outcome);

    /// The caller waiting for the answer, for request-reply sources that answer errors to
    /// it (the HTTP trigger); `None` for every other source.
    fn caller(&self) -> Option<Caller> {
        None
    }
}

/// The one commit point shared by a request-reply trigger and the engine, so that a caller
/// told "nothing was delivered" (a 504 before any sink) can rely on it: the engine writes
/// to sinks only after [`Caller::commit`], and the trigger gives up only through
/// [`Caller::give_up`], which says whether the sinks had already started.
#[derive(Clone, Debug, Default)]
pub struct Caller(Arc<AtomicU8>);

/// Waiting for the outcome; nothing written yet.
const WAITING: u8 = 0;
/// Sinks are being written; the caller still waits for the outcome.
const COMMITTED: u8 = 1;
/// The caller gave up before any sink write: it was told nothing was delivered.
const CANCELLED: u8 = 2;
/// The caller gave up while the sinks were being written: it does not know the outcome.
const UNANSWERED: u8 = 3;

/// What the caller was told when it stopped waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GaveUp {
    /// No sink was (or will be) written: retrying is safe.
    NothingDelivered,
    /// Sinks were already being written: the outcome is unknown.
    OutcomeUnknown,
}

impl Caller {
    /// A caller that is waiting.
    pub fn new() -> Self {
        Caller::default()
    }

    /// Called by the engine before the first sink write: `false` means the caller was
    /// already told that nothing was delivered, so nothing may be written.
    pub fn commit(&self) -> bool {
        match self
            .0
            .compare_exchange(WAITING, COMMITTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state != CANCELLED,
        }
    }

    /// Called by the trigger when it stops waiting (its timeout, or the client left).
    pub fn give_up(&self) -> GaveUp {
        match self
            .0
            .compare_exchange(WAITING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(CANCELLED) => GaveUp::NothingDelivered,
            Err(_) => {
                self.0.store(UNANSWERED, Ordering::Release);
                GaveUp::OutcomeUnknown
            }
        }
    }

    /// Whether a failure is (or was) answered to the caller as a failure: not so once it
    /// gave up while the sinks were written, since it was told the outcome is unknown.
    pub fn answers_failure(&self) -> bool {
        self.0.load(Ordering::Acquire) != UNANSWERED
    }
}

/// A message plus the acknowledgement owed to its source.
pub struct Envelope {
    /// The message.
    pub message: Message,
    /// Called once with the outcome.
    pub ack: Box<dyn Acker>,
    /// Whether the trigger wants the final payload back in the outcome (request-reply);
    /// converting it costs, so one-way triggers say no.
    pub reply: bool,
    /// The batch the message belongs to (the file trigger: one per file), if any.
    pub batch: Option<crate::hold::Batch>,
}

impl Envelope {
    /// A one-way message (no reply wanted, no batch) and the acknowledgement it owes.
    pub fn new(message: Message, ack: Box<dyn Acker>) -> Self {
        Envelope {
            message,
            ack,
            reply: false,
            batch: None,
        }
    }

    /// The same envelope, whose trigger waits for the final payload (request-reply).
    pub fn wanting_reply(mut self) -> Self {
        self.reply = true;
        self
    }

    /// The same envelope, as a member of `batch`.
    pub fn in_batch(mut self, batch: crate::hold::Batch) -> Self {
        self.batch = Some(batch);
        self
    }
}

/// A trigger's health: `None` when healthy, else why not. Shared with `/readyz`.
pub type Health = Arc<std::sync::Mutex<Option<String>>>;

/// What a trigger reports about its source for `/api/flows` (`source`): a Kafka group's
/// partitions assigned to this process, say. Shared with the registry's status.
pub(crate) type SourceState = Arc<std::sync::Mutex<Option<serde_json::Value>>>;

/// The sending end of a flow's bounded queue, handed to its trigger.
#[derive(Clone)]
pub struct Inlet {
    flow: Arc<str>,
    tx: mpsc::Sender<Envelope>,
    health: Health,
    source: SourceState,
    /// The flow's workers: its running version (for the failures a trigger finds itself)
    /// and its slots (for messages run in place).
    workers: Option<Arc<Workers>>,
}

impl Inlet {
    /// An inlet feeding `tx`.
    pub fn new(flow: &str, tx: mpsc::Sender<Envelope>, health: Health) -> Self {
        Inlet {
            flow: flow.into(),
            tx,
            health,
            source: SourceState::default(),
            workers: None,
        }
    }

    /// What the trigger reports about its source, shown as `source` in `/api/flows`.
    pub(crate) fn source_state(&self) -> SourceState {
        self.source.clone()
    }

    /// Reports the trigger's view of its source (replacing the last report), shown as
    /// `source` in `/api/flows/{name}`: for `kafka`, the group and the partitions this
    /// process holds. Structured data, never a secret.
    pub fn set_source_state(&self, state: serde_json::Value) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }

    /// The same inlet, feeding the flow that `workers` run.
    pub(crate) fn for_flow(mut self, workers: Arc<Workers>) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The error envelope of a failure that the trigger finds before there is a message (a
    /// file too large to read): it names the flow version running now and a fresh message
    /// id, so it reads, and is found in the logs, like every other failure.
    pub fn envelope(&self, error: &FlowError) -> ErrorEnvelope {
        let version = self
            .workers
            .as_ref()
            .map(|workers| workers.current.load().version.clone())
            .unwrap_or_default();
        let message_id = uuid::Uuid::now_v7().to_string();
        ErrorEnvelope::new(&self.flow, &version, &message_id, error, 1)
    }

    /// Marks the trigger unhealthy (the flow then reports unready), with the reason.
    pub fn set_unhealthy(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if health.as_deref() != Some(reason.as_str()) {
            tracing::warn!(flow = %self.flow, "trigger unhealthy: {reason}");
            *health = Some(reason);
        }
    }

    /// Marks the trigger healthy again.
    pub fn set_healthy(&self) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if health.take().is_some() {
            tracing::info!(flow = %self.flow, "trigger healthy again");
        }
    }

    /// Whether the trigger is healthy (it is until it says otherwise).
    pub fn is_healthy(&self) -> bool {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// The flow's name (for message metadata and logs).
    pub fn flow(&self) -> &str {
        &self.flow
    }

    /// Queues a message, waiting while the queue is full (backpressure). Fails only when
    /// the flow is stopping; the envelope comes back so the caller can release its source.
    pub async fn send(&self, envelope: Envelope) -> Result<(), Box<Envelope>> {
        self.tx.send(envelope).await.map_err(|e| Box::new(e.0))
    }

    /// Starts a message without the flow's queue, for a trigger that serves each message in
    /// a task of its own and waits there for its outcome (an HTTP request): the message
    /// takes one of the flow's `concurrency` slots (waiting while none is free, which paces
    /// the trigger like a full queue) and runs in a task of the flow's workers, to its end
    /// whether or not the caller still waits; a flow doing only local work runs it in place
    /// on the blocking pool. Shutdown waits for it like for a queued message. Fails only
    /// when the flow is stopping.
    pub async fn start(&self, envelope: Envelope) -> Result<(), Box<Envelope>> {
        match &self.workers {
            Some(workers) => workers.start_now(envelope).await,
            None => self.send(envelope).await,
        }
    }

    /// Runs a message here, to its acknowledgement, when the caller is on a thread that may
    /// block ([`crate::in_place::block_on`]) and the flow's running version does only local
    /// work ([`crate::CompiledFlow::in_place`]); queues it like [`Inlet::send`] otherwise. The
    /// message takes one of the flow's `concurrency` slots either way, and shutdown waits
    /// for it the same. Fails only when the flow is stopping.
    pub async fn process_here(&self, envelope: Envelope) -> Result<(), Box<Envelope>> {
        match &self.workers {
            Some(workers) if crate::in_place::may_block() && workers.current.load().in_place => {
                workers.run_here(envelope).await;
                Ok(())
            }
            _ => self.send(envelope).await,
        }
    }
}

/// A source of messages for one flow.
#[async_trait]
pub trait Trigger: Send {
    /// Runs until `stop` is cancelled, feeding messages into `inlet`.
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken);

    /// Whether a new version of this trigger may start before the old one has drained
    /// (true for request-driven triggers such as HTTP, where overlap avoids a gap; false for
    /// triggers that claim from a shared source, such as a folder).
    fn can_overlap(&self) -> bool {
        false
    }
}

/// What a connector needs to build itself: the flow, for positioned diagnostics.
pub struct BuildContext<'a> {
    /// The flow file being compiled.
    pub flow: &'a LoadedFlow,
}

impl BuildContext<'_> {
    /// A diagnostic at a position in the flow file.
    pub fn diagnostic<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> Diagnostic {
        self.flow.diagnostic(Span::of(at), message)
    }
}

/// Builds sinks and triggers from their configuration; the binary supplies one
/// (sluice-connectors' `StandardConnectors`, derived from its one list of components).
pub trait Connectors: Send + Sync {
    /// Builds (and checks) a sink; nothing is opened or written yet.
    fn sink(
        &self,
        name: &str,
        config: &Spanned<SinkConfig>,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<dyn Sink>, Diagnostic>;

    /// What the compiler needs to know about a sink (its kind, the folder it writes).
    fn sink_info(&self, config: &Spanned<SinkConfig>) -> SinkInfo;

    /// Builds (and checks) a trigger; it starts working only when run.
    fn trigger(
        &self,
        config: &Spanned<TriggerConfig>,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn Trigger>, Diagnostic>;

    /// What the registry needs to know about a trigger: its description, claim, broker,
    /// and the key that decides whether a reload restarts it.
    fn trigger_info(&self, config: &Spanned<TriggerConfig>, cx: &BuildContext<'_>) -> TriggerInfo;
}
