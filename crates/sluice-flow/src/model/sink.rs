use crate::Text;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// A destination for messages.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// One file per message in a folder.
    File(FileSinkConfig),
    /// One line per message on standard output.
    Stdout(StdoutSinkConfig),
    /// Publishes to a NATS subject (JetStream by default).
    Nats(super::NatsSinkConfig),
    /// Sends to a named channel that another flow consumes.
    Channel(super::ChannelConfig),
    /// Publishes to a RabbitMQ exchange with publisher confirms.
    Amqp(super::AmqpSinkConfig),
    /// Publishes to an MQTT topic (QoS 1 waits for the PUBACK).
    Mqtt(super::MqttSinkConfig),
    /// Appends to a Redis Stream (`XADD`).
    Redis(super::RedisSinkConfig),
    /// Inserts or upserts a row in PostgreSQL (or runs a parameterised statement).
    Postgres(super::PostgresSinkConfig),
    /// Inserts or upserts a row in MariaDB/MySQL (or runs a parameterised statement).
    Mysql(super::MysqlSinkConfig),
    /// Produces to a Kafka topic (idempotent, `acks=all`).
    Kafka(super::KafkaSinkConfig),
    /// One file per message in a folder on an SSH server.
    Sftp(super::SftpSinkConfig),
    /// An HTTP request per message.
    Http(crate::HttpSinkConfig),
}

/// How a payload is written out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Compact JSON.
    #[default]
    Json,
    /// Indented JSON.
    Pretty,
    /// Compact JSON followed by a newline.
    NdjsonLine,
    /// A string payload as it is; anything else as compact JSON.
    Text,
    /// An XML document, by the XML convention (`xml.root` names the root element).
    Xml,
}

/// What a file sink does when the target name already exists with other content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Write `name-1.ext`, `name-2.ext`, …
    #[default]
    Suffix,
    /// Fail the message with a `sink` error.
    Error,
    /// Replace the existing file.
    Overwrite,
}

/// Writes each message to its own file, atomically (temporary name, then rename).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The target folder, relative to the working directory.
    #[schemars(with = "Text")]
    pub path: Spanned<Text>,
    /// File name template; `{{ expr }}` holds JMESPath.
    #[serde(default = "default_name")]
    #[schemars(with = "Text")]
    pub name: Spanned<Text>,
    /// Serialization of the payload.
    #[serde(default)]
    pub format: OutputFormat,
    /// Behaviour when the name exists with different content.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// Flush file and folder to disk before confirming.
    #[serde(default)]
    pub fsync: bool,
    /// XML options, for `format: xml`.
    #[serde(default)]
    pub xml: crate::XmlWriteConfig,
}

fn default_name() -> Spanned<Text> {
    super::trigger::unspanned(Text::from("{{meta('message_id')}}.json"))
}

/// Prints each message on standard output.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Serialization of the payload (`ndjson-line` is the same as `json` here).
    #[serde(default)]
    pub format: OutputFormat,
}
