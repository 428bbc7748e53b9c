//! The `amqp` trigger: consumes a queue with a prefetch window, acks (`basic.ack`) each
//! delivery after the flow's sinks or its dead letter confirmed, and rejects with requeue
//! after a failure that was not dead-lettered.

use super::AmqpError;
use crate::codec::{self, consume_reconnecting};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use sluice_engine::{Acker, BuildContext, Envelope, Inlet, Message, Meta, Outcome, Trigger};
use sluice_engine::{CORRELATION_ID, MESSAGE_ID};
use sluice_flow::{AmqpTriggerConfig, Diagnostic, MessageFormat};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Consumes one RabbitMQ queue.
pub struct AmqpTrigger {
    url: String,
    queue: String,
    prefetch: u16,
    requeue_delay: Duration,
    format: MessageFormat,
}

impl AmqpTrigger {
    /// Builds the trigger; the prefetch defaults to the flow's concurrency.
    pub fn new(config: &AmqpTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        if config.queue.value.trim().is_empty() {
            return Err(cx.diagnostic(&config.queue, "the `queue` is empty"));
        }
        let concurrency = cx
            .flow
            .file
            .concurrency
            .as_ref()
            .map(|c| c.value)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let prefetch = config
            .prefetch
            .unwrap_or_else(|| u16::try_from(concurrency).unwrap_or(u16::MAX))
            .max(1);
        Ok(AmqpTrigger {
            url: config.url.value.to_string(),
            queue: config.queue.value.to_string(),
            prefetch,
            requeue_delay: config.requeue_delay.0,
            format: config.format,
        })
    }

    async fn consume(&self, inlet: &Inlet, stop: &CancellationToken) -> Result<(), AmqpError> {
        let connection = super::connect(&self.url).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::Channel)?;
        channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|source| AmqpError::Declare {
                queue: self.queue.clone(),
                source,
            })?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(AmqpError::Qos)?;
        let mut consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| AmqpError::Consume {
                queue: self.queue.clone(),
                source,
            })?;
        inlet.set_healthy();
        tracing::info!(flow = %inlet.flow(), queue = %self.queue, prefetch = self.prefetch, "amqp consumer ready");
        // The queue's ready messages (a passive declare); RabbitMQ does not say how many are
        // unacknowledged through AMQP.
        let _lag = {
            let (channel, queue) = (channel.clone(), self.queue.clone());
            crate::lag::spawn(inlet.flow(), stop, move || {
                let (channel, queue) = (channel.clone(), queue.clone());
                async move {
                    let declared = channel
                        .queue_declare(
                            queue.as_str().into(),
                            QueueDeclareOptions {
                                passive: true,
                                ..Default::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .ok()?;
                    Some(crate::lag::Lag {
                        lag: Some(u64::from(declared.message_count())),
                        pending: None,
                    })
                }
            })
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => {
                    // Unacknowledged deliveries go back to the queue when the connection closes.
                    let _ = connection.close(200, "sluice stopping".into()).await;
                    return Ok(());
                }
                next = consumer.next() => next,
            };
            let delivery = match next {
                None => return Err(AmqpError::Cancelled),
                Some(Err(e)) => return Err(AmqpError::Delivery(e)),
                Some(Ok(delivery)) => delivery,
            };
            if !self.forward(delivery, inlet).await {
                return Ok(());
            }
        }
    }

    async fn forward(&self, delivery: lapin::message::Delivery, inlet: &Inlet) -> bool {
        let mut meta = Meta::new();
        meta.insert("amqp.queue".to_owned(), self.queue.clone());
        meta.insert("amqp.exchange".to_owned(), delivery.exchange.to_string());
        meta.insert(
            "amqp.routing_key".to_owned(),
            delivery.routing_key.to_string(),
        );
        meta.insert(
            "amqp.redelivered".to_owned(),
            delivery.redelivered.to_string(),
        );
        let properties = &delivery.properties;
        if let Some(headers) = properties.headers() {
            for (name, value) in headers.inner() {
                if let Some(text) = super::header_text(value) {
                    meta.insert(format!("amqp.header.{}", name.as_str()), text);
                }
            }
        }
        if let Some(id) = properties.message_id() {
            meta.insert(MESSAGE_ID.to_owned(), id.to_string());
        }
        // Without a correlation property, the message id the producer gave (if any)
        // correlates; `Message::new` gives the others a fresh id.
        if let Some(id) = properties
            .correlation_id()
            .as_ref()
            .or(properties.message_id().as_ref())
        {
            meta.insert(CORRELATION_ID.to_owned(), id.to_string());
        }
        let flow = inlet.flow().to_owned();
        let message = match codec::decode(self.format, &delivery.data) {
            Ok(payload) => Message::new(&flow, payload, meta),
            Err(why) => Message::undecodable(&flow, &delivery.data, why.to_string(), meta),
        };
        let envelope = Envelope::new(
            message,
            Box::new(AmqpAcker {
                acker: delivery.acker,
                requeue_delay: self.requeue_delay,
                flow,
            }),
        );
        inlet.start(envelope).await.is_ok()
    }
}

#[async_trait]
impl Trigger for AmqpTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let this = &*self;
        let (inlet, stop) = (&inlet, &stop);
        consume_reconnecting(
            inlet,
            stop,
            &format!("amqp trigger (queue {})", this.queue),
            || this.consume(inlet, stop),
        )
        .await;
    }
}

/// Acknowledges one delivery according to its outcome.
struct AmqpAcker {
    acker: lapin::Acker,
    requeue_delay: Duration,
    flow: String,
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        let result = match &outcome {
            Outcome::Delivered(_) | Outcome::Completed(_) | Outcome::Filtered => {
                self.acker.ack(BasicAckOptions::default()).await
            }
            Outcome::Failed(failure) if failure.dead_lettered => {
                self.acker.ack(BasicAckOptions::default()).await
            }
            // A body that cannot be read would come back for ever: reject it without requeue
            // (the queue's dead-letter exchange gets it, if it has one).
            Outcome::Failed(_) if outcome.settled() => {
                self.acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
            }
            Outcome::Failed(failure) => {
                tracing::info!(flow = %self.flow, message_id = %failure.envelope.message_id,
                    "message failed; requeued in {}", humantime::format_duration(self.requeue_delay));
                // RabbitMQ redelivers a requeued message at once: pause first, so a broken
                // downstream is not hammered in a tight loop.
                tokio::time::sleep(self.requeue_delay).await;
                self.acker
                    .reject(BasicRejectOptions { requeue: true })
                    .await
            }
        };
        if let Err(e) = result {
            // The broker requeues every unacknowledged delivery when the channel closes: a
            // duplicate at worst, never a loss.
            tracing::warn!(flow = %self.flow, "amqp ack failed (the message will be redelivered): {e}");
        }
    }
}
