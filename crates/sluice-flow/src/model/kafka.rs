//! Configuration of the `kafka` connector: a consumer-group trigger and an idempotent
//! producer sink.
//!
//! Kept in a module of its own so that adding Kafka touches the shared `trigger.rs` and
//! `sink.rs` by one enum variant each.

use super::MessageFormat;
use super::trigger::unspanned;
use crate::{Count, Dur, Text};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::time::Duration;

fn default_brokers() -> Spanned<Text> {
    unspanned(Text::from("127.0.0.1:9092"))
}
fn default_session_timeout() -> Spanned<Dur> {
    unspanned(Dur(Duration::from_secs(10)))
}
fn default_heartbeat_interval() -> Spanned<Dur> {
    unspanned(Dur(Duration::from_secs(3)))
}
fn default_kafka_batch() -> Count {
    Count(500)
}
fn default_commit_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_commit_count() -> Count {
    Count(500)
}
fn default_retry_delay() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_lag_interval() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_kafka_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_linger() -> Dur {
    Dur(Duration::from_millis(5))
}

/// Where a consumer group starts on a partition it has no committed offset for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaStart {
    /// At the oldest message the broker still keeps (nothing already there is skipped).
    #[default]
    Earliest,
    /// After the newest message: only what is produced from now on.
    Latest,
}

/// How the messages of one partition may overtake each other in the flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaOrder {
    /// One message of a partition in the flow at a time, in offset order; partitions run in
    /// parallel (up to the flow's `concurrency`). A flow's `order_by` keys the order instead.
    #[default]
    Partition,
    /// Messages run in parallel (up to `concurrency`) whatever their partition; offsets are
    /// still committed only contiguously.
    None,
}

/// How the `kafka` sink picks the partition of a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaPartitioner {
    /// murmur2 hash of the key (the Java client's choice, so keys land where Java producers
    /// put them); messages without a key are spread at random.
    #[default]
    Murmur2Random,
    /// murmur2 hash of the key; messages without a key all go to one partition.
    Murmur2,
    /// CRC32 hash of the key; messages without a key are spread at random (librdkafka's own
    /// default).
    ConsistentRandom,
    /// CRC32 hash of the key; messages without a key all go to one partition.
    Consistent,
    /// FNV-1a hash of the key (Sarama's choice); messages without a key at random.
    Fnv1aRandom,
    /// FNV-1a hash of the key; messages without a key all go to one partition.
    Fnv1a,
    /// A random partition for every message, key or not.
    Random,
}

impl KafkaPartitioner {
    /// The value of librdkafka's `partitioner` property.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            KafkaPartitioner::Murmur2Random => "murmur2_random",
            KafkaPartitioner::Murmur2 => "murmur2",
            KafkaPartitioner::ConsistentRandom => "consistent_random",
            KafkaPartitioner::Consistent => "consistent",
            KafkaPartitioner::Fnv1aRandom => "fnv1a_random",
            KafkaPartitioner::Fnv1a => "fnv1a",
            KafkaPartitioner::Random => "random",
        }
    }
}

/// How the `kafka` sink compresses its batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
}

impl KafkaCompression {
    /// The value of librdkafka's `compression.codec` property.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
        }
    }
}

/// The `kafka` trigger: a consumer group. Offsets are committed only for messages whose
/// sinks (or dead letter) confirmed, and only contiguously per partition.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaTriggerConfig {
    /// Bootstrap brokers, `host:port`, comma-separated.
    #[serde(default = "default_brokers")]
    #[schemars(with = "Text")]
    pub brokers: Spanned<Text>,
    /// The topics to consume; an entry starting with `^` is a regular expression matching
    /// topic names (librdkafka's convention), e.g. `^orders-.*`.
    #[schemars(with = "Vec<Text>", length(min = 1))]
    pub topics: Spanned<Vec<Spanned<Text>>>,
    /// The consumer group; every process using it shares the partitions.
    #[schemars(with = "Text")]
    pub group: Spanned<Text>,
    /// Where the group starts on a partition without a committed offset.
    #[serde(default)]
    pub start: KafkaStart,
    /// How long the group waits for a silent member before it gives its partitions to others.
    #[serde(default = "default_session_timeout")]
    #[schemars(with = "Dur")]
    pub session_timeout: Spanned<Dur>,
    /// How often this member tells the group it is alive (below `session_timeout`).
    #[serde(default = "default_heartbeat_interval")]
    #[schemars(with = "Dur")]
    pub heartbeat_interval: Spanned<Dur>,
    /// Messages fetched ahead per partition, and the most a partition holds waiting for its
    /// turn before it is paused (backpressure).
    #[serde(default = "default_kafka_batch")]
    pub batch: Count,
    /// How the messages of one partition may overtake each other.
    #[serde(default)]
    pub order: KafkaOrder,
    /// Confirmed offsets are committed at least this often.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: Dur,
    /// Confirmed offsets are committed as soon as this many messages were confirmed since the
    /// last commit.
    #[serde(default = "default_commit_count")]
    pub commit_count: Count,
    /// Pause before a failed message (not dead-lettered) and those after it in its partition
    /// are read again.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: Dur,
    /// How often the consumer lag of each partition is measured (`sluice_kafka_consumer_lag`).
    #[serde(default = "default_lag_interval")]
    pub lag_interval: Dur,
    /// How the message value becomes a payload.
    #[serde(default)]
    pub format: MessageFormat,
    /// Further librdkafka properties (`fetch.max.bytes`, `client.id`, …), set last. The ones
    /// sluice decides (the group, commits, offsets) are refused.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Text>")]
    pub options: BTreeMap<String, Spanned<Text>>,
}

/// The `kafka` sink: an idempotent producer (`acks=all`); a write returns once the broker
/// acknowledged the message.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port`, comma-separated.
    #[serde(default = "default_brokers")]
    #[schemars(with = "Text")]
    pub brokers: Spanned<Text>,
    /// Topic template; `{{ expr }}` holds JMESPath.
    #[schemars(with = "Text")]
    pub topic: Spanned<Text>,
    /// Message key template (the partitioner hashes it); absent: no key.
    #[schemars(with = "Option<Text>")]
    pub key: Option<Spanned<Text>>,
    /// How the partition of a message is picked.
    #[serde(default)]
    pub partitioner: KafkaPartitioner,
    /// How long a write waits for the broker's acknowledgement (a timeout is retried).
    #[serde(default = "default_kafka_timeout")]
    pub timeout: Dur,
    /// How long the producer gathers messages into one request.
    #[serde(default = "default_linger")]
    pub linger: Dur,
    /// How batches are compressed.
    #[serde(default)]
    pub compression: KafkaCompression,
    /// How the payload becomes the message value.
    #[serde(default)]
    pub format: MessageFormat,
    /// Further librdkafka properties (`batch.size`, `client.id`, …), set last. The ones
    /// sluice decides (acknowledgements, idempotence, timeouts) are refused.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Text>")]
    pub options: BTreeMap<String, Spanned<Text>>,
}
