//! The `channel` connector: flow-to-flow messaging by name.
//!
//! In-process backend (the default): a bounded queue per channel in a [`ChannelHub`] shared by
//! every flow of the process. A channel sink's write is confirmed only when the consuming flow
//! has finished the message (its sinks or its dead letter confirmed), so the upstream source
//! is acknowledged after the downstream sinks: a crash loses nothing, and a slow consumer
//! slows the producer down (backpressure) instead of filling memory.
//!
//! NATS backend (`sluice.yaml`: `channels: { backend: nats, url: … }`): channel `x` is the
//! JetStream stream `SLUICE_CH_x` on subject `sluice.channel.x` with the durable consumer
//! `sluice-ch-x`, so the same flow files scale out over several processes and machines.

use crate::codec;
#[cfg(feature = "nats")]
use crate::nats::{JetStreamSource, NatsClients, NatsSink, NatsTrigger};
use async_trait::async_trait;
use serde_json::Value;
use sluice_engine::{
    Acker, BuildContext, Envelope, ErrorKind, FlowError, Inlet, Message, Meta, Outcome, Outgoing,
    Sink, Trigger,
};
use sluice_engine::{CORRELATION_ID, Ids, MESSAGE_ID};
use sluice_flow::{ChannelBackend, ChannelConfig, Diagnostic, Settings};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Messages waiting in one in-process channel before a writer has to wait.
const CAPACITY: usize = 256;

/// One message in flight between two flows, with the way back to the writer.
struct Item {
    payload: Value,
    meta: Meta,
    done: oneshot::Sender<Result<(), FlowError>>,
}

type Queue = (
    mpsc::Sender<Item>,
    Arc<tokio::sync::Mutex<mpsc::Receiver<Item>>>,
);

/// The in-process channels of one sluice process, created on first use by name.
#[derive(Clone, Default)]
pub struct ChannelHub {
    queues: Arc<Mutex<HashMap<String, Queue>>>,
}

impl ChannelHub {
    fn queue(&self, name: &str) -> Queue {
        // A poisoned lock only means another thread panicked while inserting; the map is
        // still consistent (insertion is one call), so carry on with it.
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues
            .entry(name.to_owned())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(CAPACITY);
                (tx, Arc::new(tokio::sync::Mutex::new(rx)))
            })
            .clone()
    }
}

/// What every channel connector of one process shares: the backend and its state.
#[derive(Clone, Default)]
pub struct Channels {
    backend: ChannelBackend,
    // The NATS backend's address; unread in a build without NATS.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    url: String,
    hub: ChannelHub,
    #[cfg(feature = "nats")]
    nats: NatsClients,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold credentials.
        write!(f, "Channels({:?})", self.backend)
    }
}

impl Channels {
    /// The channels described by `sluice.yaml`'s `channels:` section.
    pub fn new(settings: &Settings, #[cfg(feature = "nats")] nats: NatsClients) -> Self {
        Channels {
            backend: settings.channels.backend,
            url: settings
                .channels
                .url
                .as_ref()
                .map(|u| u.to_string())
                .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned()),
            hub: ChannelHub::default(),
            #[cfg(feature = "nats")]
            nats,
        }
    }

    fn check(config: &ChannelConfig, cx: &BuildContext<'_>) -> Result<String, Diagnostic> {
        let name = config.name.value.to_string();
        codec::check_name(&name)
            .map_err(|e| cx.diagnostic(&config.name, format!("invalid channel name: {e}")))?;
        Ok(name)
    }

    #[cfg(feature = "nats")]
    fn nats_names(name: &str) -> (String, String, String) {
        (
            format!("SLUICE_CH_{name}"),
            format!("sluice.channel.{name}"),
            format!("sluice-ch-{name}"),
        )
    }

    /// The trigger reading channel `config.name`.
    pub fn trigger(
        &self,
        config: &ChannelConfig,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn Trigger>, Diagnostic> {
        let name = Self::check(config, cx)?;
        Ok(match self.backend {
            ChannelBackend::InProcess => Box::new(ChannelTrigger {
                name: name.clone(),
                queue: self.hub.queue(&name),
            }),
            #[cfg(not(feature = "nats"))]
            ChannelBackend::Nats => return Err(nats_left_out(config, cx)),
            #[cfg(feature = "nats")]
            ChannelBackend::Nats => {
                let (stream, subject, durable) = Self::nats_names(&name);
                Box::new(NatsTrigger::for_channel(
                    self.nats.clone(),
                    &self.url,
                    &name,
                    &subject,
                    JetStreamSource { stream, durable },
                ))
            }
        })
    }

    /// The sink writing to channel `config.name`.
    pub fn sink(
        &self,
        config: &ChannelConfig,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<dyn Sink>, Diagnostic> {
        let name = Self::check(config, cx)?;
        Ok(match self.backend {
            ChannelBackend::InProcess => Arc::new(ChannelSink {
                name: name.clone(),
                tx: self.hub.queue(&name).0,
                timeout: config.timeout.0,
            }),
            #[cfg(not(feature = "nats"))]
            ChannelBackend::Nats => return Err(nats_left_out(config, cx)),
            #[cfg(feature = "nats")]
            ChannelBackend::Nats => {
                let (stream, subject, _) = Self::nats_names(&name);
                Arc::new(
                    NatsSink::for_channel(
                        self.nats.clone(),
                        &self.url,
                        &subject,
                        &stream,
                        config.timeout.0,
                    )
                    .map_err(|e| cx.diagnostic(&config.name, e.to_string()))?,
                )
            }
        })
    }
}

/// The load error for a channel when `sluice.yaml` puts channels on NATS and this build has
/// no NATS connector.
#[cfg(not(feature = "nats"))]
fn nats_left_out(config: &ChannelConfig, cx: &BuildContext<'_>) -> Diagnostic {
    cx.diagnostic(
        &config.name,
        "`sluice.yaml` puts channels on NATS (`channels: { backend: nats }`), but this build of sluice was built without the cargo feature `nats`",
    )
    .with_help("use a sluice built with the `nats` feature (on by default), or remove `channels:` from sluice.yaml for in-process channels")
}

/// Sends to an in-process channel and waits until the consuming flow is done with it.
struct ChannelSink {
    name: String,
    tx: mpsc::Sender<Item>,
    timeout: Duration,
}

#[async_trait]
impl Sink for ChannelSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let payload = out
            .payload
            .json()
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, e))?
            .clone();
        let (done, finished) = oneshot::channel();
        let item = Item {
            payload,
            meta: (*out.meta).clone(),
            done,
        };
        let name = &self.name;
        let handover = async {
            self.tx.send(item).await.map_err(|_| {
                FlowError::new(ErrorKind::Sink, format!("channel `{name}` is closed"))
            })?;
            finished.await.map_err(|_| {
                FlowError::new(
                    ErrorKind::Sink,
                    format!(
                        "the flow reading channel `{name}` stopped before finishing the message"
                    ),
                )
            })?
        };
        match tokio::time::timeout(self.timeout, handover).await {
            Ok(result) => result,
            Err(_) => Err(FlowError::new(
                ErrorKind::Timeout,
                format!(
                    "channel `{name}`: no flow finished the message within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    fn target(&self, _out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(format!("channel {}", self.name))
    }
}

/// Reads an in-process channel; several flows reading one channel share its messages.
struct ChannelTrigger {
    name: String,
    queue: Queue,
}

#[async_trait]
impl Trigger for ChannelTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let rx = self.queue.1.clone();
        loop {
            let item = {
                let mut rx = tokio::select! {
                    _ = stop.cancelled() => return,
                    rx = rx.lock() => rx,
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    item = rx.recv() => item,
                }
            };
            // The hub keeps a sender for every channel, so `None` cannot happen; stop anyway.
            let Some(Item {
                payload,
                meta: upstream,
                done,
            }) = item
            else {
                return;
            };
            // The message keeps its id and correlation id across the hop; the rest of the
            // upstream metadata belongs to the upstream flow.
            let mut meta = Meta::new();
            meta.insert(MESSAGE_ID.to_owned(), upstream.message_id().to_owned());
            meta.insert(CORRELATION_ID.to_owned(), upstream.correlation().to_owned());
            meta.insert("channel.name".to_owned(), self.name.clone());
            meta.insert(
                "channel.from".to_owned(),
                upstream.get("flow").cloned().unwrap_or_default(),
            );
            let envelope = Envelope::new(
                Message::new(inlet.flow(), payload, meta),
                Box::new(ChannelAcker { done }),
            );
            if inlet.send(envelope).await.is_err() {
                // Dropping the envelope drops `done`: the writer sees a retryable error.
                return;
            }
        }
    }
}

/// Reports the consuming flow's outcome back to the writing sink.
struct ChannelAcker {
    done: oneshot::Sender<Result<(), FlowError>>,
}

#[async_trait]
impl Acker for ChannelAcker {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        let result = match outcome {
            Outcome::Delivered(_) | Outcome::Completed(_) | Outcome::Filtered => Ok(()),
            Outcome::Failed(failure) if failure.dead_lettered => Ok(()),
            Outcome::Failed(failure) => Err(FlowError {
                step: None,
                message: format!("the consuming flow failed: {}", failure.error),
                ..failure.error
            }),
        };
        // The writer may have timed out and gone; then there is nobody left to tell.
        let _ = self.done.send(result);
    }
}

impl crate::TriggerComponent for ChannelConfig {
    const KEY: &'static str = "channel";

    fn build(
        &self,
        shared: &crate::StandardConnectors,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn Trigger>, Diagnostic> {
        shared.channels.trigger(self, cx)
    }

    fn describe(&self) -> String {
        format!("channel {}", self.name.value)
    }

    /// A channel may live on NATS (`channels: { backend: nats }`), which can be down.
    fn connects(&self) -> bool {
        true
    }
}

impl crate::SinkComponent for ChannelConfig {
    const KEY: &'static str = "channel";

    fn build(
        &self,
        _: &str,
        shared: &crate::StandardConnectors,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<dyn Sink>, Diagnostic> {
        shared.channels.sink(self, cx)
    }
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
