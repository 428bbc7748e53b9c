use crate::{ByteSize, Dur, Text};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::time::Duration;

/// Where a flow's messages come from; exactly one per flow.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerConfig {
    /// Files dropped into a folder.
    File(FileTriggerConfig),
    /// A NATS JetStream durable consumer (or a core NATS subject).
    Nats(super::NatsTriggerConfig),
    /// Messages another flow sent to a named channel.
    Channel(super::ChannelConfig),
    /// A RabbitMQ (AMQP 0-9-1) queue.
    Amqp(super::AmqpTriggerConfig),
    /// MQTT topic filters, in a persistent session.
    Mqtt(super::MqttTriggerConfig),
    /// A Redis Stream, read through a consumer group.
    Redis(super::RedisTriggerConfig),
    /// A PostgreSQL outbox table, polled with `FOR UPDATE SKIP LOCKED`.
    Postgres(super::PostgresTriggerConfig),
    /// A MariaDB/MySQL outbox table, polled with `FOR UPDATE SKIP LOCKED`.
    Mysql(super::MysqlTriggerConfig),
    /// Kafka topics, read through a consumer group.
    Kafka(super::KafkaTriggerConfig),
    /// Files in a folder on an SSH server.
    Sftp(super::SftpTriggerConfig),
    /// Requests on the shared HTTP listener.
    Http(crate::HttpTriggerConfig),
    /// A clock.
    Schedule(crate::ScheduleTriggerConfig),
}

/// How the content of a file becomes messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// The whole file is one JSON value.
    #[default]
    Json,
    /// One JSON value per non-empty line.
    Ndjson,
    /// One message per row.
    Csv,
    /// The file as a UTF-8 string.
    Text,
    /// The file as a base64 string.
    Bytes,
    /// An XML document, as JSON by the XML convention; with `xml.record`, one message per
    /// record element.
    Xml,
}

/// What to do with a file whose messages all succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnSuccess {
    /// Move it to `.done/`.
    #[default]
    Move,
    /// Delete it.
    Delete,
}

/// The file trigger: watches one folder and claims stable files by renaming them.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTriggerConfig {
    /// The watched folder, relative to the working directory.
    #[schemars(with = "Text")]
    pub path: Spanned<Text>,
    /// Which file names to take.
    #[serde(default = "default_glob")]
    #[schemars(with = "Text")]
    pub glob: Spanned<Text>,
    /// How a file becomes messages.
    #[serde(default)]
    pub format: FileFormat,
    /// Move to `.done/` or delete after success.
    #[serde(default)]
    pub on_success: OnSuccess,
    /// Larger files go to `.error/` without being read.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// Minimum age since the file was first seen.
    #[serde(default = "default_min_age")]
    pub min_age: Dur,
    /// Interval between looks at files that are settling.
    #[serde(default = "default_check_interval")]
    pub check_interval: Dur,
    /// Consecutive identical looks (size and mtime) before a file is taken.
    #[serde(
        default = "default_stable_checks",
        deserialize_with = "crate::units::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub stable_checks: u32,
    /// Interval of the full rescan that backs up filesystem notifications.
    #[serde(default = "default_rescan_interval")]
    pub rescan_interval: Dur,
    /// Files claimed at once.
    #[serde(
        default = "default_max_in_flight",
        deserialize_with = "crate::units::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub max_in_flight: usize,
    /// CSV options, for `format: csv`.
    #[serde(default)]
    pub csv: CsvOptions,
    /// XML options, for `format: xml`.
    #[serde(default)]
    pub xml: crate::XmlReadConfig,
}

/// CSV parsing options.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter, one ASCII character.
    #[serde(default = "default_delimiter")]
    #[schemars(length(min = 1, max = 1))]
    #[schemars(with = "Text")]
    pub delimiter: Spanned<Text>,
    /// The first row names the fields.
    #[serde(default = "default_true")]
    pub header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: default_delimiter(),
            header: true,
        }
    }
}

pub(crate) fn unspanned<T>(value: T) -> Spanned<T> {
    let nowhere = serde_saphyr::Location::UNKNOWN;
    Spanned::new(value, nowhere, nowhere)
}

pub(super) fn default_glob() -> Spanned<Text> {
    unspanned(Text::from("*"))
}
fn default_delimiter() -> Spanned<Text> {
    unspanned(Text::from(","))
}
fn default_true() -> bool {
    true
}
pub(super) fn default_max_size() -> ByteSize {
    ByteSize(64 << 20)
}
pub(super) fn default_min_age() -> Dur {
    Dur(Duration::from_millis(500))
}
pub(super) fn default_check_interval() -> Dur {
    Dur(Duration::from_millis(200))
}
pub(super) fn default_stable_checks() -> u32 {
    3
}
fn default_rescan_interval() -> Dur {
    Dur(Duration::from_secs(2))
}
pub(super) fn default_max_in_flight() -> usize {
    256
}
