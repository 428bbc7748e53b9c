//! Configuration of the broker and channel connectors: NATS (JetStream), channels, RabbitMQ
//! (AMQP), Redis Streams and PostgreSQL.
//!
//! Kept in one module apart from `trigger.rs` and `sink.rs` so that adding a broker touches
//! those shared files by one enum variant only.

use super::trigger::unspanned;
use crate::{Dur, Text};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::time::Duration;

/// How the bytes of a broker message become a payload, and back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    /// The body is one JSON value (a body that is not JSON is a `trigger` error).
    #[default]
    Json,
    /// The body is UTF-8 text, the payload a JSON string.
    Text,
    /// The body is opaque, the payload a base64 string.
    Bytes,
    /// The body is an XML document, the payload its JSON form by the XML convention (an
    /// object of one key, the root element's name); a payload sent as XML must have that form.
    Xml,
}

fn default_nats_url() -> Spanned<Text> {
    unspanned(Text::from("nats://127.0.0.1:4222"))
}
fn default_max_deliver() -> i64 {
    5
}
fn default_ack_wait() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_nak_delay() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_batch() -> crate::Count {
    crate::Count(64)
}
fn default_publish_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_true() -> bool {
    true
}

/// The `nats` trigger: a JetStream durable pull consumer (at-least-once), or a plain core
/// NATS subscription when no `stream` is given (at-most-once).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsTriggerConfig {
    /// Server URL(s), comma-separated; credentials may sit in the URL (`${env:…}`).
    #[serde(default = "default_nats_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// The subject (wildcards allowed) the consumer filters on.
    #[schemars(with = "Text")]
    pub subject: Spanned<Text>,
    /// The JetStream stream; created with `subject` when it does not exist. Absent: core NATS.
    #[schemars(with = "Option<Text>")]
    pub stream: Option<Spanned<Text>>,
    /// The durable consumer name; every process using it shares the work.
    #[schemars(with = "Option<Text>")]
    pub durable: Option<Spanned<Text>>,
    /// Deliveries of one message before JetStream gives up on it (`-1`: no limit).
    #[serde(default = "default_max_deliver")]
    pub max_deliver: i64,
    /// How long JetStream waits for an ack before it redelivers.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: Dur,
    /// Redelivery delay after a failure that was not dead-lettered.
    #[serde(default = "default_nak_delay")]
    pub nak_delay: Dur,
    /// Messages fetched per pull request.
    #[serde(default = "default_batch")]
    pub batch: crate::Count,
    /// How the message body becomes a payload.
    #[serde(default)]
    pub format: MessageFormat,
}

/// The `nats` sink: publishes to a subject, to JetStream (awaiting the publish ack) by default.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL(s), comma-separated.
    #[serde(default = "default_nats_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// Subject template; `{{ expr }}` holds JMESPath.
    #[schemars(with = "Text")]
    pub subject: Spanned<Text>,
    /// Await JetStream's publish ack (`false`: core NATS, fire and forget).
    #[serde(default = "default_true")]
    pub jetstream: bool,
    /// How long to wait for the publish ack (a timeout is retried).
    #[serde(default = "default_publish_timeout")]
    pub timeout: Dur,
    /// How the payload becomes the message body.
    #[serde(default)]
    pub format: MessageFormat,
    /// Create the JetStream stream before the first publish when it is missing (idempotent:
    /// an existing stream is used as it is). Without it a subject no stream captures fails.
    #[schemars(with = "Option<NatsCreateStream>")]
    pub create_stream: Option<Spanned<NatsCreateStream>>,
}

/// The stream a `nats` sink creates when it is missing (`create_stream:`).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsCreateStream {
    /// The stream's name (letters, digits, `-`, `_`).
    #[schemars(with = "Text", regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub name: Spanned<Text>,
    /// The subjects it captures (wildcards allowed); default: the sink's `subject` when it has
    /// no `{{ }}` holes.
    #[serde(default)]
    #[schemars(with = "Vec<Text>")]
    pub subjects: Vec<Spanned<Text>>,
    /// When the stream lets a message go.
    #[serde(default)]
    pub retention: NatsRetention,
    /// Where the stream keeps its messages.
    #[serde(default)]
    pub storage: NatsStorage,
    /// How long a message is kept at most (default: no limit).
    pub max_age: Option<Dur>,
}

/// A JetStream stream's retention policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NatsRetention {
    /// Messages stay until a limit (`max_age`) removes them; consumers may replay.
    #[default]
    Limits,
    /// A message goes once every consumer that exists acknowledged it.
    Interest,
    /// A message goes once one consumer acknowledged it (a work queue).
    Workqueue,
}

/// Where a JetStream stream stores its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NatsStorage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In memory only.
    Memory,
}

/// A named flow-to-flow channel, as trigger or sink.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The channel's name: letters, digits, `-` and `_`.
    #[schemars(with = "Text", regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub name: Spanned<Text>,
    /// Sink only: how long a write may wait for the consuming flow (a timeout is retried).
    #[serde(default = "default_channel_timeout")]
    pub timeout: Dur,
}

fn default_channel_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

fn default_amqp_url() -> Spanned<Text> {
    unspanned(Text::from("amqp://guest:guest@127.0.0.1:5672/%2f"))
}

/// The `amqp` trigger: consumes a RabbitMQ queue, prefetch = the flow's concurrency.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpTriggerConfig {
    /// Broker URL (`amqp://` or `amqps://`); credentials may sit in it (`${env:…}`).
    #[serde(default = "default_amqp_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// The queue; declared durable when missing.
    #[schemars(with = "Text")]
    pub queue: Spanned<Text>,
    /// Unacknowledged deliveries at once (default: the flow's concurrency).
    pub prefetch: Option<u16>,
    /// Pause before a failed message (not dead-lettered) is rejected with requeue.
    #[serde(default = "default_nak_delay")]
    pub requeue_delay: Dur,
    /// How the message body becomes a payload.
    #[serde(default)]
    pub format: MessageFormat,
}

/// The `amqp` sink: publishes with publisher confirms to an exchange and routing key.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    /// Broker URL.
    #[serde(default = "default_amqp_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// Exchange name; `""` is the default exchange (routing key = queue name).
    #[serde(default)]
    pub exchange: Text,
    /// Routing key template; `{{ expr }}` holds JMESPath.
    #[schemars(with = "Text")]
    pub routing_key: Spanned<Text>,
    /// How long to wait for the broker's confirm (a timeout is retried).
    #[serde(default = "default_publish_timeout")]
    pub timeout: Dur,
    /// How the payload becomes the message body.
    #[serde(default)]
    pub format: MessageFormat,
    /// Declare a durable queue (and the exchange, and the binding) before the first publish
    /// and after every reconnect (idempotent). Without it an unroutable message fails.
    #[schemars(with = "Option<AmqpDeclare>")]
    pub declare: Option<Spanned<AmqpDeclare>>,
}

/// What an `amqp` sink declares (`declare:`).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpDeclare {
    /// The durable queue the messages go to.
    #[schemars(with = "Text")]
    pub queue: Spanned<Text>,
    /// The key binding the queue to `exchange` (not with the default exchange, which routes
    /// by queue name); default: the routing key when it has no `{{ }}` holes.
    #[schemars(with = "Option<Text>")]
    pub binding_key: Option<Spanned<Text>>,
    /// The type `exchange` is declared with (durable) when it is not the default exchange.
    #[serde(default)]
    pub exchange_type: AmqpExchangeType,
}

/// The type of an exchange an `amqp` sink declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AmqpExchangeType {
    /// Routing keys match binding patterns (`orders.*`, `orders.#`).
    #[default]
    Topic,
    /// The routing key equals the binding key.
    Direct,
    /// Every bound queue gets every message.
    Fanout,
    /// Routed by header values.
    Headers,
}

fn default_redis_url() -> Spanned<Text> {
    unspanned(Text::from("redis://127.0.0.1:6379"))
}
fn default_claim_idle() -> Dur {
    Dur(Duration::from_secs(30))
}

/// The `redis` trigger: a Redis Stream read through a consumer group.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisTriggerConfig {
    /// Server URL (`redis://`, or `rediss://` for TLS); credentials may sit in it (`${env:…}`).
    #[serde(default = "default_redis_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// TLS settings for a `rediss://` URL.
    #[schemars(with = "Option<Box<crate::TlsFiles>>")]
    pub tls: Option<Box<Spanned<crate::TlsFiles>>>,
    /// The stream key.
    #[schemars(with = "Text")]
    pub stream: Spanned<Text>,
    /// The consumer group; created (from the start of the stream) when missing.
    #[schemars(with = "Text")]
    pub group: Spanned<Text>,
    /// This process's consumer name (default: host name and process id).
    #[schemars(with = "Option<Text>")]
    pub consumer: Option<Spanned<Text>>,
    /// Pending entries idle this long belong to a dead consumer and are claimed.
    #[serde(default = "default_claim_idle")]
    pub claim_idle: Dur,
    /// Entries read per `XREADGROUP`.
    #[serde(default = "default_batch")]
    pub batch: crate::Count,
    /// The entry field holding the body.
    #[serde(default = "default_redis_field")]
    pub field: Text,
    /// How the body becomes a payload.
    #[serde(default)]
    pub format: MessageFormat,
}

fn default_redis_field() -> Text {
    Text::from("payload")
}

/// The `redis` sink: `XADD` to a stream, optionally trimmed with `MAXLEN ~`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// Server URL (`redis://`, or `rediss://` for TLS).
    #[serde(default = "default_redis_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// TLS settings for a `rediss://` URL.
    #[schemars(with = "Option<Box<crate::TlsFiles>>")]
    pub tls: Option<Box<Spanned<crate::TlsFiles>>>,
    /// Stream key template; `{{ expr }}` holds JMESPath.
    #[schemars(with = "Text")]
    pub stream: Spanned<Text>,
    /// Approximate cap of the stream's length (`MAXLEN ~`).
    pub maxlen: Option<usize>,
    /// The entry field holding the body.
    #[serde(default = "default_redis_field")]
    pub field: Text,
    /// How the payload becomes the body.
    #[serde(default)]
    pub format: MessageFormat,
}

fn default_postgres_url() -> Spanned<Text> {
    unspanned(Text::from("postgres://postgres@127.0.0.1:5432/test"))
}
fn default_pool() -> usize {
    8
}

/// `on_conflict` of a `postgres` sink: an upsert.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgConflict {
    /// The conflict target (a unique or primary key).
    #[schemars(with = "Vec<Text>")]
    pub key: Vec<Spanned<Text>>,
    /// Columns overwritten on conflict; empty: `DO NOTHING`.
    #[serde(default)]
    #[schemars(with = "Vec<Text>")]
    pub update: Vec<Spanned<Text>>,
}

/// The `postgres` sink: one transaction per message, insert/upsert or a parameterised statement.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// The sink builder refuses every other combination, at the key that is wrong.
#[schemars(extend("oneOf" = [
    {
        "required": ["table", "columns"],
        "properties": { "columns": { "minProperties": 1 } },
        "not": { "anyOf": [{ "required": ["sql"] }, { "required": ["args"] }] }
    },
    {
        "required": ["sql"],
        "not": { "anyOf": [{ "required": ["table"] }, { "required": ["columns"] }, { "required": ["on_conflict"] }] }
    }
]))]
pub struct PostgresSinkConfig {
    /// Connection URL; credentials may sit in it (`${env:…}`).
    #[serde(default = "default_postgres_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// TLS for the connection (plain without it).
    #[schemars(with = "Option<Box<crate::PostgresTls>>")]
    pub tls: Option<Box<Spanned<crate::PostgresTls>>>,
    /// Target table (`name` or `schema.name`), with `columns`.
    #[schemars(with = "Option<Text>")]
    pub table: Option<Spanned<Text>>,
    /// Column → JMESPath expression giving its value.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Text>")]
    pub columns: BTreeMap<String, Spanned<Text>>,
    /// Upsert instead of insert.
    #[schemars(with = "Option<PgConflict>")]
    pub on_conflict: Option<Spanned<PgConflict>>,
    /// A statement with `$1`, `$2`, … instead of `table`.
    #[schemars(with = "Option<Text>")]
    pub sql: Option<Spanned<Text>>,
    /// JMESPath expressions giving `$1`, `$2`, … of `sql`.
    #[serde(default)]
    #[schemars(with = "Vec<Text>")]
    pub args: Vec<Spanned<Text>>,
    /// Connections in the pool.
    #[serde(
        default = "default_pool",
        deserialize_with = "crate::units::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub pool: usize,
}

/// The `postgres` trigger: an outbox table polled with `FOR UPDATE SKIP LOCKED`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresTriggerConfig {
    /// Connection URL.
    #[serde(default = "default_postgres_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// TLS for the connection (plain without it).
    #[schemars(with = "Option<Box<crate::PostgresTls>>")]
    pub tls: Option<Box<Spanned<crate::PostgresTls>>>,
    /// The outbox table.
    #[schemars(with = "Text")]
    pub table: Spanned<Text>,
    /// Its key column.
    #[serde(default = "default_pg_id")]
    pub id: Text,
    /// The column holding the payload (`json`/`jsonb`, or text holding JSON).
    #[serde(default = "default_pg_payload")]
    pub payload: Text,
    /// Rows claimed per poll.
    #[serde(default = "default_batch")]
    pub batch: crate::Count,
    /// Wait between polls that found nothing.
    #[serde(default = "default_poll")]
    pub poll: Dur,
}

fn default_pg_id() -> Text {
    Text::from("id")
}
fn default_pg_payload() -> Text {
    Text::from("payload")
}
fn default_poll() -> Dur {
    Dur(Duration::from_millis(500))
}

fn default_mqtt_url() -> Spanned<Text> {
    unspanned(Text::from("mqtt://127.0.0.1:1883"))
}
fn default_keep_alive() -> Spanned<Dur> {
    unspanned(Dur(Duration::from_secs(30)))
}

/// Quality of service of an MQTT subscription or publish. QoS 2 is not offered: sluice's
/// acknowledgement after the sinks already gives at-least-once, and dedupe gives the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MqttQos {
    /// At most once: nothing is acknowledged, a message in flight during a crash is lost.
    AtMostOnce,
    /// At least once: acknowledged (PUBACK) only after the flow's sinks confirmed.
    #[default]
    AtLeastOnce,
}

impl MqttQos {
    /// The number written in a flow file.
    pub fn level(self) -> u8 {
        match self {
            MqttQos::AtMostOnce => 0,
            MqttQos::AtLeastOnce => 1,
        }
    }
}

impl Serialize for MqttQos {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.level())
    }
}

impl JsonSchema for MqttQos {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MqttQos".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "MQTT quality of service: 1 (at least once) or 0 (at most once).",
            "type": "integer",
            "enum": [0, 1],
        })
    }
}

impl<'de> Deserialize<'de> for MqttQos {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u8::deserialize(deserializer)? {
            0 => Ok(MqttQos::AtMostOnce),
            1 => Ok(MqttQos::AtLeastOnce),
            other => Err(serde::de::Error::custom(format!(
                "`qos: {other}` is not offered; use 1 (at least once, the default) or 0 (at most once)"
            ))),
        }
    }
}

/// TLS settings of an `mqtts://` connection (the shared [`TlsFiles`](crate::TlsFiles)).
pub type MqttTls = crate::TlsFiles;

/// The `mqtt` trigger: subscribes to topic filters in a persistent session, so messages
/// published while sluice is down are delivered when it is back.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttTriggerConfig {
    /// Broker URL (`mqtt://` or `mqtts://`); `user:password@` may sit in it (`${env:…}`).
    #[serde(default = "default_mqtt_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// Topic filters; `+` matches one level, `#` the rest.
    #[schemars(with = "Vec<Text>")]
    pub topics: Spanned<Vec<Spanned<Text>>>,
    /// TLS settings for an `mqtts://` URL.
    #[schemars(with = "Option<Box<crate::TlsFiles>>")]
    pub tls: Option<Box<Spanned<MqttTls>>>,
    /// The session's client id (default `sluice-<flow name>`). The broker keeps the session
    /// under this id: keep it stable, and unique among the broker's clients.
    #[schemars(with = "Option<Text>")]
    pub client_id: Option<Spanned<Text>>,
    /// Start a fresh session at every connect (messages sent while away are then lost).
    #[serde(default)]
    pub clean_session: bool,
    /// Subscription QoS: 1 (default) or 0.
    #[serde(default)]
    pub qos: MqttQos,
    /// Interval of keep-alive pings, in whole seconds (`0s` turns them off).
    #[serde(
        default = "default_keep_alive",
        deserialize_with = "crate::units::whole_seconds"
    )]
    #[schemars(with = "crate::WholeSeconds")]
    pub keep_alive: Spanned<Dur>,
    /// After a failure that was not dead-lettered, the session is resumed after this pause,
    /// which makes the broker deliver the message again.
    #[serde(default = "default_nak_delay")]
    pub redeliver_delay: Dur,
    /// How the message body becomes a payload.
    #[serde(default)]
    pub format: MessageFormat,
}

/// The `mqtt` sink: publishes to a templated topic and, at QoS 1, waits for the PUBACK.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// Broker URL.
    #[serde(default = "default_mqtt_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// Topic template; `{{ expr }}` holds JMESPath. No wildcards.
    #[schemars(with = "Text")]
    pub topic: Spanned<Text>,
    /// TLS settings for an `mqtts://` URL.
    #[schemars(with = "Option<Box<crate::TlsFiles>>")]
    pub tls: Option<Box<Spanned<MqttTls>>>,
    /// Publish QoS: 1 (default, waits for the broker's PUBACK) or 0.
    #[serde(default)]
    pub qos: MqttQos,
    /// Ask the broker to keep the message as the topic's retained message.
    #[serde(default)]
    pub retain: bool,
    /// Client id prefix (default `sluice-<flow name>-pub`); the process id and a random
    /// suffix are appended, so several processes never take each other's connection.
    #[schemars(with = "Option<Text>")]
    pub client_id: Option<Spanned<Text>>,
    /// How long to wait for the PUBACK (a timeout is retried).
    #[serde(default = "default_publish_timeout")]
    pub timeout: Dur,
    /// How the payload becomes the message body.
    #[serde(default)]
    pub format: MessageFormat,
}
