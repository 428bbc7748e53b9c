//! The `kafka` trigger: a consumer group read by one loop that hands messages to the flow,
//! keeps the offsets of each partition ([`super::offsets`]), commits the confirmed ones in
//! batches, and pauses partitions instead of buffering when the flow cannot take more.
//!
//! With `order: partition` one message of a partition is in the flow at a time; the
//! partition's next messages wait here (a partition holding `batch` of them is paused). A
//! message that fails without being dead-lettered holds its partition for `retry_delay`,
//! then the partition is read again from the first offset not yet settled.

use super::context::{ConsumerCx, Shared};
use super::run::Run;
use crate::codec::consume_reconnecting;
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use sluice_engine::{BuildContext, Inlet, Trigger};
use sluice_flow::{Diagnostic, KafkaOrder, KafkaStart, KafkaTriggerConfig, MessageFormat};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The consumer properties a flow may not set through `options`, and what decides them.
const OWNED: &[super::Owned] = &[
    ("bootstrap.servers", "use `brokers:`"),
    ("group.id", "use `group:`"),
    ("auto.offset.reset", "use `start:`"),
    ("session.timeout.ms", "use `session_timeout:`"),
    ("heartbeat.interval.ms", "use `heartbeat_interval:`"),
    (
        "enable.auto.commit",
        "offsets are committed only after the sinks confirmed (`commit_interval:`, `commit_count:`)",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed only after the sinks confirmed",
    ),
    ("queued.min.messages", "use `batch:`"),
    ("statistics.interval.ms", "use `lag_interval:`"),
];

/// Why the consumer stopped; the flow shows it as its unhealthy reason and connects again.
#[derive(Debug, thiserror::Error)]
pub enum KafkaTriggerError {
    /// librdkafka refused to create the consumer.
    #[error("kafka consumer: {0}")]
    Create(#[source] KafkaError),
    /// The subscription was refused (an invalid topic pattern).
    #[error("kafka subscribe: {0}")]
    Subscribe(#[source] KafkaError),
    /// A fatal consumer error: the consumer is made again.
    #[error("kafka consumer: {0}")]
    Fatal(#[source] KafkaError),
    /// A partition could not be read again from a failed message.
    #[error("kafka seek {topic}/{partition} to {offset}: {source}")]
    Seek {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset to read again from.
        offset: i64,
        /// librdkafka's reason.
        #[source]
        source: KafkaError,
    },
}

/// Reads Kafka topics through a consumer group.
pub struct KafkaTrigger {
    pub(super) config: ClientConfig,
    pub(super) topics: Vec<String>,
    pub(super) group: String,
    pub(super) order: KafkaOrder,
    pub(super) batch: usize,
    pub(super) commit_interval: Duration,
    pub(super) commit_count: usize,
    pub(super) retry_delay: Duration,
    pub(super) format: MessageFormat,
}

impl KafkaTrigger {
    /// Builds the trigger from its flow configuration; nothing is opened yet.
    pub fn new(config: &KafkaTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        if config.topics.value.is_empty() {
            return Err(cx
                .diagnostic(&config.topics, "`topics` is empty")
                .with_help("list the topics to consume, or a pattern such as `^orders-.*`"));
        }
        for topic in &config.topics.value {
            check_topic(topic.value.as_str()).map_err(|why| cx.diagnostic(topic, why))?;
        }
        if config.group.value.as_str().trim().is_empty() {
            return Err(cx.diagnostic(&config.group, "the `group` is empty"));
        }
        let session = config.session_timeout.value.0;
        let heartbeat = config.heartbeat_interval.value.0;
        if session < Duration::from_millis(1) {
            return Err(cx.diagnostic(
                &config.session_timeout,
                "`session_timeout` must be positive",
            ));
        }
        if heartbeat.is_zero() || heartbeat >= session {
            return Err(cx
                .diagnostic(
                    &config.heartbeat_interval,
                    "`heartbeat_interval` must be positive and below `session_timeout`",
                )
                .with_help("a third of `session_timeout` or less is usual"));
        }
        let mut client = super::client_config(&config.brokers, &config.options, OWNED, cx)?;
        let millis = |d: Duration| d.as_millis().max(1).to_string();
        client
            .set("group.id", config.group.value.as_str())
            .set(
                "auto.offset.reset",
                match config.start {
                    KafkaStart::Earliest => "earliest",
                    KafkaStart::Latest => "latest",
                },
            )
            .set("session.timeout.ms", millis(session))
            .set("heartbeat.interval.ms", millis(heartbeat))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("queued.min.messages", config.batch.0.to_string())
            .set("statistics.interval.ms", millis(config.lag_interval.0));
        // With `order_by` the engine orders by that key, so the trigger need not hold
        // a partition's messages back.
        let order = match cx.flow.file.order_by {
            Some(_) => KafkaOrder::None,
            None => config.order,
        };
        Ok(KafkaTrigger {
            config: client,
            topics: config
                .topics
                .value
                .iter()
                .map(|t| t.value.to_string())
                .collect(),
            group: config.group.value.to_string(),
            order,
            batch: config.batch.0.max(1),
            commit_interval: config.commit_interval.0.max(Duration::from_millis(1)),
            commit_count: config.commit_count.0.max(1),
            retry_delay: config.retry_delay.0,
            format: config.format,
        })
    }

    async fn consume(
        &self,
        inlet: &Inlet,
        stop: &CancellationToken,
    ) -> Result<(), KafkaTriggerError> {
        metrics::describe_gauge!(
            "sluice_kafka_consumer_lag",
            "Messages of an assigned Kafka partition after the group's committed offset."
        );
        let shared = Arc::new(Mutex::new(Shared::default()));
        let context = ConsumerCx {
            shared: shared.clone(),
            inlet: inlet.clone(),
            group: self.group.clone(),
        };
        let consumer: StreamConsumer<ConsumerCx> = self
            .config
            .create_with_context(context)
            .map_err(KafkaTriggerError::Create)?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(KafkaTriggerError::Subscribe)?;
        tracing::info!(flow = %inlet.flow(), group = %self.group, topics = %self.topics.join(","), "kafka consumer subscribed");
        let (tx, rx) = mpsc::unbounded_channel();
        let mut run = Run {
            trigger: self,
            inlet,
            shared,
            tx,
            open: 0,
            since_commit: 0,
            stopping: false,
        };
        let result = run.serve(&consumer, rx, stop).await;
        // Closing the consumer leaves the group at once (the revoke commits what is left).
        drop(consumer);
        result
    }
}

/// Checks a topic name, or a `^` pattern, as Kafka would.
fn check_topic(topic: &str) -> Result<(), String> {
    if let Some(pattern) = topic.strip_prefix('^') {
        return match pattern.is_empty() {
            true => Err("the topic pattern is empty".to_owned()),
            false => Ok(()),
        };
    }
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err(format!("`{topic}` is not a Kafka topic name"));
    }
    match topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(bad) => Err(format!(
            "`{topic}` contains `{bad}`: a Kafka topic name has letters, digits, `.`, `_` and `-` (a pattern starts with `^`)"
        )),
        None => Ok(()),
    }
}

#[async_trait]
impl Trigger for KafkaTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let this = &*self;
        let (inlet, stop) = (&inlet, &stop);
        consume_reconnecting(inlet, stop, "kafka trigger", || async move {
            this.consume(inlet, stop).await
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::check_topic;

    #[test]
    fn topic_names_are_checked_as_kafka_does() {
        assert!(check_topic("orders.v1_eu-2").is_ok());
        assert!(check_topic("^orders-.*").is_ok());
        assert!(check_topic("^").is_err());
        assert!(check_topic("").is_err());
        assert!(check_topic("..").is_err());
        let why = check_topic("a b").unwrap_err();
        assert!(why.contains("contains ` `"), "{why}");
        assert!(check_topic(&"x".repeat(250)).is_err());
    }
}
