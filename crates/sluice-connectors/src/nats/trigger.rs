//! The `nats` trigger. With a `stream`, a JetStream durable pull consumer: a message is
//! acknowledged only after the flow's sinks (or its dead letter) confirmed it, a failure is
//! `nak`ed with a delay, and `max_deliver` bounds the redeliveries. Without a `stream`, a core
//! NATS subscription (at-most-once: NATS does not keep what it could not deliver).

use super::{NatsClients, NatsError};
use crate::codec::{self, consume_reconnecting};
use async_nats::jetstream::{self, AckKind, consumer};
use async_trait::async_trait;
use futures_util::StreamExt;
use sluice_engine::{Acker, BuildContext, Envelope, Inlet, Message, Meta, Outcome, Trigger};
use sluice_engine::{CORRELATION_ID, Ids, MESSAGE_ID};
use sluice_flow::{Diagnostic, MessageFormat, NatsTriggerConfig};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A JetStream stream and durable consumer to read from.
#[derive(Debug, Clone)]
pub(crate) struct JetStreamSource {
    /// The stream (created with `subject` when missing).
    pub stream: String,
    /// The durable consumer.
    pub durable: String,
}

/// Reads a NATS subject, through JetStream or core NATS.
pub struct NatsTrigger {
    clients: NatsClients,
    url: String,
    subject: String,
    jetstream: Option<JetStreamSource>,
    max_deliver: i64,
    ack_wait: Duration,
    nak_delay: Duration,
    batch: usize,
    format: MessageFormat,
    /// Metadata added to every message (for channels: `channel.name`).
    extra_meta: Vec<(String, String)>,
}

impl NatsTrigger {
    /// Builds the trigger from its flow configuration; nothing is opened yet.
    pub fn new(
        config: &NatsTriggerConfig,
        clients: NatsClients,
        cx: &BuildContext<'_>,
    ) -> Result<Self, Diagnostic> {
        let jetstream = match (&config.stream, &config.durable) {
            (Some(stream), Some(durable)) => {
                codec::check_name(&stream.value)
                    .map_err(|e| cx.diagnostic(stream, format!("invalid stream name: {e}")))?;
                codec::check_name(&durable.value)
                    .map_err(|e| cx.diagnostic(durable, format!("invalid durable name: {e}")))?;
                Some(JetStreamSource {
                    stream: stream.value.to_string(),
                    durable: durable.value.to_string(),
                })
            }
            (Some(stream), None) => {
                return Err(cx
                    .diagnostic(
                        stream,
                        "a JetStream `stream` needs a `durable` consumer name",
                    )
                    .with_help("add `durable: <name>`; processes sharing it share the work"));
            }
            (None, Some(durable)) => {
                return Err(cx
                    .diagnostic(durable, "`durable` needs a JetStream `stream`")
                    .with_help("add `stream: <name>`, or remove `durable` for core NATS"));
            }
            (None, None) => None,
        };
        if config.subject.value.trim().is_empty() {
            return Err(cx.diagnostic(&config.subject, "the `subject` is empty"));
        }
        Ok(NatsTrigger {
            clients,
            url: config.url.value.to_string(),
            subject: config.subject.value.to_string(),
            jetstream,
            max_deliver: config.max_deliver,
            ack_wait: config.ack_wait.0,
            nak_delay: config.nak_delay.0,
            batch: config.batch.0,
            format: config.format,
            extra_meta: Vec::new(),
        })
    }

    /// A JetStream trigger for a channel (no flow file position to report).
    pub(crate) fn for_channel(
        clients: NatsClients,
        url: &str,
        channel: &str,
        subject: &str,
        source: JetStreamSource,
    ) -> Self {
        NatsTrigger {
            clients,
            url: url.to_owned(),
            subject: subject.to_owned(),
            jetstream: Some(source),
            max_deliver: -1,
            ack_wait: Duration::from_secs(30),
            nak_delay: Duration::from_secs(1),
            batch: 64,
            format: MessageFormat::Json,
            extra_meta: vec![("channel.name".to_owned(), channel.to_owned())],
        }
    }

    async fn consume_jetstream(
        &self,
        source: &JetStreamSource,
        inlet: &Inlet,
        stop: &CancellationToken,
    ) -> Result<(), NatsError> {
        let client = self.clients.get(&self.url).await?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: source.stream.clone(),
                subjects: vec![self.subject.clone()],
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Stream {
                stream: source.stream.clone(),
                source: e,
            })?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &source.durable,
                consumer::pull::Config {
                    durable_name: Some(source.durable.clone()),
                    filter_subject: self.subject.clone(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: self.max_deliver,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| NatsError::Consumer {
                durable: source.durable.clone(),
                source: e,
            })?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| NatsError::Pull {
                durable: source.durable.clone(),
                source: e,
            })?;
        inlet.set_healthy();
        tracing::info!(flow = %inlet.flow(), stream = %source.stream, durable = %source.durable, "nats consumer ready");
        // The durable's `num_pending` (not yet delivered) and `num_ack_pending`.
        let _lag = {
            let consumer = consumer.clone();
            crate::lag::spawn(inlet.flow(), stop, move || {
                let consumer = consumer.clone();
                async move {
                    let info = consumer.get_info().await.ok()?;
                    Some(crate::lag::Lag {
                        lag: Some(info.num_pending),
                        pending: Some(info.num_ack_pending as u64),
                    })
                }
            })
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let message = match next {
                None => return Err(NatsError::StreamEnded),
                Some(Err(e)) => {
                    return Err(NatsError::Messages {
                        durable: source.durable.clone(),
                        source: e,
                    });
                }
                Some(Ok(message)) => message,
            };
            if !self.forward(message, inlet).await {
                return Ok(());
            }
        }
    }

    /// Hands one JetStream message to the flow; `false` when the flow is stopping.
    async fn forward(&self, message: jetstream::Message, inlet: &Inlet) -> bool {
        let mut meta = Meta::new();
        let (delivered, sequence, stream) = match message.info() {
            Ok(info) => (info.delivered, info.stream_sequence, info.stream.to_owned()),
            Err(_) => (1, 0, String::new()),
        };
        let (message, acker) = message.split();
        meta.insert("nats.subject".to_owned(), message.subject.to_string());
        meta.insert("nats.stream".to_owned(), stream.clone());
        meta.insert("nats.sequence".to_owned(), sequence.to_string());
        meta.insert("nats.delivered".to_owned(), delivered.to_string());
        meta.insert("nats.max_deliver".to_owned(), self.max_deliver.to_string());
        header_meta(&message, &mut meta);
        // Stable across redeliveries, so sinks can recognise a message they already took.
        meta.entry(MESSAGE_ID.to_owned())
            .or_insert_with(|| format!("{stream}-{sequence}"));
        if meta.correlation_id().is_none() {
            let id = meta.message_id().to_owned();
            meta.insert(CORRELATION_ID.to_owned(), id);
        }
        meta.extend(self.extra_meta.iter().cloned());
        let flow = inlet.flow().to_owned();
        let message = match codec::decode(self.format, &message.payload) {
            Ok(payload) => Message::new(&flow, payload, meta),
            Err(why) => Message::undecodable(&flow, &message.payload, why.to_string(), meta),
        };
        let envelope = Envelope::new(
            message,
            Box::new(JetStreamAcker {
                acker,
                delivered,
                max_deliver: self.max_deliver,
                nak_delay: self.nak_delay,
                flow,
            }),
        );
        inlet.start(envelope).await.is_ok()
    }

    async fn consume_core(&self, inlet: &Inlet, stop: &CancellationToken) -> Result<(), NatsError> {
        let client = self.clients.get(&self.url).await?;
        let mut subscriber = client
            .subscribe(self.subject.clone())
            .await
            .map_err(|source| NatsError::Subscribe {
                subject: self.subject.clone(),
                source,
            })?;
        inlet.set_healthy();
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = subscriber.next() => next,
            };
            let Some(message) = next else {
                return Err(NatsError::SubscriptionEnded);
            };
            let mut meta = Meta::new();
            meta.insert("nats.subject".to_owned(), message.subject.to_string());
            header_meta(&message, &mut meta);
            let flow = inlet.flow().to_owned();
            let payload = match codec::decode(self.format, &message.payload) {
                Ok(payload) => payload,
                Err(why) => {
                    tracing::error!(flow = %flow, subject = %message.subject, "trigger error: {why}; message dropped (core NATS)");
                    continue;
                }
            };
            let envelope = Envelope::new(Message::new(&flow, payload, meta), Box::new(NoAck));
            if inlet.start(envelope).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Copies the message's headers into the metadata: `nats.header.<name>`, and the ids sluice
/// itself puts on messages it publishes.
fn header_meta(message: &async_nats::Message, meta: &mut Meta) {
    let Some(headers) = &message.headers else {
        return;
    };
    for (name, values) in headers.iter() {
        if let Some(value) = values.first() {
            meta.insert(
                format!(
                    "nats.header.{}",
                    AsRef::<str>::as_ref(name).to_ascii_lowercase()
                ),
                value.as_str().to_owned(),
            );
        }
    }
    let id = headers
        .get(super::sink::MESSAGE_ID_HEADER)
        .or_else(|| headers.get("Nats-Msg-Id"));
    if let Some(id) = id {
        meta.insert(MESSAGE_ID.to_owned(), id.as_str().to_owned());
    }
    if let Some(correlation) = headers.get(super::sink::CORRELATION_ID_HEADER) {
        meta.insert(CORRELATION_ID.to_owned(), correlation.as_str().to_owned());
    }
}

#[async_trait]
impl Trigger for NatsTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let this = &*self;
        let (inlet, stop) = (&inlet, &stop);
        consume_reconnecting(inlet, stop, "nats trigger", || async move {
            match &this.jetstream {
                Some(source) => this.consume_jetstream(source, inlet, stop).await,
                None => this.consume_core(inlet, stop).await,
            }
        })
        .await;
    }
}

/// Acknowledges one JetStream message according to the outcome of its flow.
struct JetStreamAcker {
    acker: jetstream::message::Acker,
    delivered: i64,
    max_deliver: i64,
    nak_delay: Duration,
    flow: String,
}

#[async_trait]
impl Acker for JetStreamAcker {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        let kind = match &outcome {
            Outcome::Delivered(_) | Outcome::Completed(_) | Outcome::Filtered => AckKind::Ack,
            // The dead letter holds it now: done.
            Outcome::Failed(failure) if failure.dead_lettered => AckKind::Ack,
            // A body that cannot be read: redelivery cannot help, so the message is
            // terminated (JetStream publishes an advisory for it).
            Outcome::Failed(_) if outcome.settled() => AckKind::Term,
            Outcome::Failed(failure) => {
                if self.max_deliver > 0 && self.delivered >= self.max_deliver {
                    // JetStream will not deliver it again: say so, loudly, and stop it.
                    tracing::error!(flow = %self.flow, message_id = %failure.envelope.message_id, delivered = self.delivered, max_deliver = self.max_deliver,
                        "message failed on its last delivery (max_deliver reached) and there is no dead letter; JetStream gives up on it");
                    AckKind::Term
                } else {
                    tracing::info!(flow = %self.flow, message_id = %failure.envelope.message_id, delivered = self.delivered, max_deliver = self.max_deliver,
                        "message failed; nak, redelivery in {}", humantime::format_duration(self.nak_delay));
                    AckKind::Nak(Some(self.nak_delay))
                }
            }
        };
        if let Err(e) = self.acker.ack_with(kind).await {
            // Not acknowledged means redelivered after `ack_wait`: a duplicate, never a loss.
            tracing::warn!(flow = %self.flow, "nats ack failed (the message will be redelivered): {e}");
        }
    }
}

/// Core NATS has nothing to acknowledge.
struct NoAck;

#[async_trait]
impl Acker for NoAck {
    async fn ack(self: Box<Self>, _outcome: Outcome) {}
}
