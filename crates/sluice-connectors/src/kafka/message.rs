//! One Kafka message on its way into the flow: its metadata and payload (or the
//! undecodable path), and the acknowledger that reports its outcome back to the loop.

use super::{CORRELATION_ID_HEADER, MESSAGE_ID_HEADER};
use crate::codec;
use async_trait::async_trait;
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use sluice_engine::{Acker, Envelope, Ids, Inlet, Message, Meta, Outcome};
use sluice_engine::{CORRELATION_ID, MESSAGE_ID};
use sluice_flow::MessageFormat;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A message settled (or given up) in the flow, sent back to the loop by its acknowledger.
pub(super) struct Settle {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) epoch: u64,
    /// The sinks or the dead letter confirmed it (or its body can never be read).
    pub(super) settled: bool,
}

/// The envelope of one message: its metadata, its payload (or the undecodable path).
pub(super) fn envelope(
    message: &BorrowedMessage<'_>,
    topic: &Arc<str>,
    epoch: u64,
    inlet: &Inlet,
    format: MessageFormat,
    tx: &mpsc::UnboundedSender<Settle>,
) -> Envelope {
    let (partition, offset) = (message.partition(), message.offset());
    let mut meta = Meta::new();
    meta.insert("kafka.topic".to_owned(), topic.to_string());
    meta.insert("kafka.partition".to_owned(), partition.to_string());
    meta.insert("kafka.offset".to_owned(), offset.to_string());
    if let Some(key) = message.key() {
        match std::str::from_utf8(key) {
            Ok(key) => {
                meta.insert("kafka.key".to_owned(), key.to_owned());
            }
            Err(_) => {
                use base64::Engine as _;
                let text = base64::engine::general_purpose::STANDARD.encode(key);
                meta.insert("kafka.key".to_owned(), text);
                meta.insert("kafka.key_encoding".to_owned(), "base64".to_owned());
            }
        }
    }
    if let Some(millis) = message.timestamp().to_millis() {
        meta.insert("kafka.timestamp".to_owned(), millis.to_string());
    }
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let Some(value) = super::header_text(header.value) else {
                continue;
            };
            match header.key {
                MESSAGE_ID_HEADER => meta.insert(MESSAGE_ID.to_owned(), value.to_owned()),
                CORRELATION_ID_HEADER => meta.insert(CORRELATION_ID.to_owned(), value.to_owned()),
                _ => None,
            };
            meta.insert(format!("kafka.header.{}", header.key), value.to_owned());
        }
    }
    // Stable across redeliveries, so sinks can recognise a message they already took.
    meta.entry(MESSAGE_ID.to_owned())
        .or_insert_with(|| format!("{topic}-{partition}-{offset}"));
    if meta.correlation_id().is_none() {
        let id = meta.message_id().to_owned();
        meta.insert(CORRELATION_ID.to_owned(), id);
    }
    let flow = inlet.flow();
    let body = message.payload().unwrap_or_default();
    let message = match codec::decode(format, body) {
        Ok(payload) => Message::new(flow, payload, meta),
        Err(why) => Message::undecodable(flow, body, why.to_string(), meta),
    };
    Envelope::new(
        message,
        Box::new(KafkaAcker {
            tx: tx.clone(),
            topic: topic.clone(),
            partition,
            offset,
            epoch,
            flow: flow.to_owned(),
            sent: false,
        }),
    )
}

/// Reports the outcome of one message to the loop; dropped unacknowledged (the flow
/// stopped, the partition was revoked), it reports "not processed".
struct KafkaAcker {
    tx: mpsc::UnboundedSender<Settle>,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    epoch: u64,
    flow: String,
    sent: bool,
}

impl KafkaAcker {
    fn report(&mut self, settled: bool) {
        self.sent = true;
        // The loop is gone when the consumer stopped: the offset stays uncommitted.
        let _ = self.tx.send(Settle {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            epoch: self.epoch,
            settled,
        });
    }
}

#[async_trait]
impl Acker for KafkaAcker {
    async fn ack(mut self: Box<Self>, outcome: Outcome) {
        let settled = outcome.settled();
        if !settled && let Outcome::Failed(failure) = &outcome {
            tracing::warn!(flow = %self.flow, message_id = %failure.envelope.message_id,
                topic = %self.topic, partition = self.partition, offset = self.offset,
                "message failed and there is no dead letter; it is read again");
        }
        self.report(settled);
    }
}

impl Drop for KafkaAcker {
    fn drop(&mut self) {
        if !self.sent {
            self.report(false);
        }
    }
}
