//! The `kafka` sink: an idempotent producer (`acks=all`, `enable.idempotence`). A write
//! renders the topic and key templates, produces one record with the `message_id` and
//! `correlation_id` headers, and returns only once the broker acknowledged it (or failed it):
//! a timeout is a retried `timeout` error, every other failure a typed [`DeliveryError`].

use super::{CORRELATION_ID_HEADER, MESSAGE_ID_HEADER};
use crate::codec;
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_engine::{BuildContext, ErrorKind, FlowError, Ids, Outgoing, Sink, Template};
use sluice_flow::{Diagnostic, KafkaSinkConfig, MessageFormat, Span, Spanned, Text};
use std::sync::Mutex;
use std::time::Duration;

/// The producer properties a flow may not set through `options`, and what decides them.
const OWNED: &[super::Owned] = &[
    ("bootstrap.servers", "use `brokers:`"),
    (
        "acks",
        "every write waits for all in-sync replicas (`acks=all`)",
    ),
    (
        "request.required.acks",
        "every write waits for all in-sync replicas (`acks=all`)",
    ),
    (
        "enable.idempotence",
        "the producer is idempotent, so its own retries never duplicate",
    ),
    ("message.timeout.ms", "use `timeout:`"),
    ("delivery.timeout.ms", "use `timeout:`"),
    ("partitioner", "use `partitioner:`"),
    ("linger.ms", "use `linger:`"),
    ("queue.buffering.max.ms", "use `linger:`"),
    ("compression.codec", "use `compression:`"),
    ("compression.type", "use `compression:`"),
];

/// Why the broker did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No acknowledgement within the sink's `timeout` (retried).
    #[error("kafka topic `{topic}`: no acknowledgement within {after}")]
    Timeout {
        /// The topic written to.
        topic: String,
        /// The sink's `timeout`, for humans.
        after: String,
    },
    /// The broker or the client refused the message for a reason no retry changes (too
    /// large, an invalid topic name, not authorised).
    #[error("kafka topic `{topic}`: the message was refused: {code}")]
    Refused {
        /// The topic written to.
        topic: String,
        /// librdkafka's or the broker's error code.
        code: RDKafkaErrorCode,
    },
    /// A failure another attempt may not meet (a leader election, brokers down).
    #[error("kafka topic `{topic}`: delivery failed: {code}")]
    Failed {
        /// The topic written to.
        topic: String,
        /// librdkafka's or the broker's error code.
        code: RDKafkaErrorCode,
    },
    /// The producer could not be created (the message was not sent).
    #[error("kafka producer: {0}")]
    Client(String),
}

impl DeliveryError {
    /// Sorts an error code into refused (permanent) or failed (retryable) and timeouts.
    fn of(topic: &str, code: RDKafkaErrorCode, timeout: Duration) -> Self {
        use RDKafkaErrorCode as C;
        let topic = topic.to_owned();
        match code {
            C::MessageTimedOut | C::RequestTimedOut => DeliveryError::Timeout {
                topic,
                after: humantime::format_duration(timeout).to_string(),
            },
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::InvalidTopic
            | C::MessageBatchTooLarge
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed => DeliveryError::Refused { topic, code },
            _ => DeliveryError::Failed { topic, code },
        }
    }
}

impl From<DeliveryError> for FlowError {
    fn from(e: DeliveryError) -> FlowError {
        match &e {
            DeliveryError::Timeout { .. } => FlowError::new(ErrorKind::Timeout, e.to_string()),
            DeliveryError::Refused { .. } => FlowError::permanent(ErrorKind::Sink, e.to_string()),
            DeliveryError::Failed { .. } | DeliveryError::Client(_) => {
                FlowError::new(ErrorKind::Sink, e.to_string())
            }
        }
    }
}

/// Produces to Kafka.
pub struct KafkaSink {
    config: ClientConfig,
    topic: Template,
    key: Option<Template>,
    timeout: Duration,
    format: MessageFormat,
    /// Created on the first write (`sluice check` never starts a client); dropped after a
    /// fatal error so that the next write starts a fresh idempotent session.
    producer: Mutex<Option<FutureProducer>>,
}

/// Compiles a template of the sink's config, with the error at its position.
fn template(
    text: &Spanned<Text>,
    what: &str,
    cx: &BuildContext<'_>,
) -> Result<Template, Diagnostic> {
    Template::compile(text.value.as_str()).map_err(|e| {
        let span =
            sluice_flow::diagnostic::position_in_scalar(&cx.flow.source, Span::of(text), 0, e.offset);
        cx.flow.diagnostic(span, e.message).with_help(format!(
            "a {what} template is text with `{{{{ jmespath }}}}` holes, e.g. \"orders-{{{{region}}}}\""
        ))
    })
}

impl KafkaSink {
    /// Builds the sink, compiling its templates and checking its options; nothing is opened.
    pub fn new(config: &KafkaSinkConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let topic = template(&config.topic, "topic", cx)?;
        if topic.is_literal() && config.topic.value.is_empty() {
            return Err(cx.diagnostic(&config.topic, "the `topic` is empty"));
        }
        let key = match &config.key {
            Some(key) => Some(template(key, "key", cx)?),
            None => None,
        };
        let mut client = super::client_config(&config.brokers, &config.options, OWNED, cx)?;
        let timeout = config.timeout.0.max(Duration::from_millis(1));
        client
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", config.partitioner.librdkafka_name())
            .set("compression.codec", config.compression.librdkafka_name())
            .set("linger.ms", config.linger.0.as_millis().to_string())
            // librdkafka gives up on a message at the sink's timeout, so that a write that
            // failed with `timeout` is not delivered later behind the retry's back.
            .set("message.timeout.ms", timeout.as_millis().to_string());
        Ok(KafkaSink {
            config: client,
            topic,
            key,
            timeout,
            format: config.format,
            producer: Mutex::new(None),
        })
    }

    fn render_topic(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        let topic = self
            .topic
            .render(&mut out.payload, &out.meta)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, format!("topic: {e}")))?;
        if topic.is_empty() {
            return Err(FlowError::permanent(ErrorKind::Sink, "the topic is empty"));
        }
        Ok(topic)
    }

    fn producer(&self) -> Result<FutureProducer, DeliveryError> {
        let mut slot = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(producer) = &*slot {
            return Ok(producer.clone());
        }
        let producer: FutureProducer = self
            .config
            .create()
            .map_err(|e| DeliveryError::Client(e.to_string()))?;
        *slot = Some(producer.clone());
        Ok(producer)
    }

    fn forget_producer(&self) {
        *self.producer.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let topic = self.render_topic(out)?;
        let key = match &self.key {
            Some(key) => Some(
                key.render(&mut out.payload, &out.meta)
                    .map_err(|e| FlowError::permanent(ErrorKind::Sink, format!("key: {e}")))?,
            ),
            None => None,
        };
        let body = codec::encode(self.format, &mut out.payload)?;
        let producer = self.producer()?;
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: MESSAGE_ID_HEADER,
                value: Some(out.meta.message_id()),
            })
            .insert(Header {
                key: CORRELATION_ID_HEADER,
                value: Some(out.meta.correlation()),
            });
        let mut record = FutureRecord::to(&topic).payload(&body).headers(headers);
        if let Some(key) = &key {
            record = record.key(key);
        }
        // librdkafka fails the message at `message.timeout.ms`; the guard past it only
        // covers a client that never answers.
        let guard = self.timeout + Duration::from_secs(1);
        let sent = tokio::time::timeout(guard, producer.send(record, self.timeout)).await;
        let code = match sent {
            Ok(Ok(_)) => return Ok(()),
            Err(_) => RDKafkaErrorCode::MessageTimedOut,
            Ok(Err((KafkaError::MessageProduction(code), _))) => code,
            Ok(Err((other, _))) => {
                return Err(DeliveryError::Failed {
                    topic,
                    code: other.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
                }
                .into());
            }
        };
        if code == RDKafkaErrorCode::Fatal {
            // The idempotent session is over; the next attempt starts another.
            self.forget_producer();
        }
        Err(DeliveryError::of(&topic, code, self.timeout).into())
    }

    fn target(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(format!("kafka topic {}", self.render_topic(out)?))
    }
}
