//! sluice's triggers and sinks, one module per connector.
//!
//! A connector is a config struct from `sluice-flow` plus an implementation of the engine's
//! [`Trigger`](sluice_engine::Trigger) or [`Sink`](sluice_engine::Sink) trait; acks, retries
//! and concurrency belong to the engine. [`StandardConnectors`] is the registry the binary
//! hands to the engine: adding a connector adds one match arm there.

// A `Diagnostic` carries its snippet and hints; it is built once per mistake, on a cold
// path, so returning it unboxed is simpler and costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod amqp;
pub mod channel;
pub mod codec;
pub mod file;
pub mod http;
pub mod mqtt;
pub mod nats;
pub mod postgres;
pub mod redis_streams;
pub mod schedule;
pub mod stdout;

use sluice_engine::{BuildContext, Connectors, Sink, Trigger};
use sluice_flow::{Diagnostic, Settings, SinkConfig, Spanned, TriggerConfig};
use std::sync::Arc;

/// Every connector that ships with sluice, with the resources they share (the HTTP
/// listener, the NATS connections, the channel backend).
#[derive(Clone)]
pub struct StandardConnectors {
    http: Arc<http::HttpHub>,
    nats: nats::NatsClients,
    channels: channel::Channels,
}

impl Default for StandardConnectors {
    /// Connectors for commands that never run triggers (`check`, `test`, `exec`).
    fn default() -> Self {
        StandardConnectors::new(http::HttpHub::new("127.0.0.1:8080"))
    }
}

impl StandardConnectors {
    /// Connectors sharing `http` as the listener of every `http` trigger.
    pub fn new(http: Arc<http::HttpHub>) -> Self {
        let nats = nats::NatsClients::default();
        StandardConnectors {
            http,
            channels: channel::Channels::new(&Settings::default(), nats.clone()),
            nats,
        }
    }

    /// The same connectors with the channel backend `sluice.yaml` chose (see [`Settings`]).
    pub fn with_settings(mut self, settings: &Settings) -> Self {
        self.channels = channel::Channels::new(settings, self.nats.clone());
        self
    }
}

impl Connectors for StandardConnectors {
    fn claim(&self, config: &TriggerConfig) -> Option<String> {
        match config {
            TriggerConfig::File(file) => Some(format!(
                "file {}",
                sluice_engine::compile::normalize(std::path::Path::new(file.path.value.as_str()))
                    .display()
            )),
            TriggerConfig::Http(http) => http::HttpTrigger::claim(http),
            TriggerConfig::Schedule(_) => None,
            // Broker sources are shared on purpose: flows and processes using the same
            // durable, queue, group or outbox split the work between them.
            TriggerConfig::Nats(_)
            | TriggerConfig::Channel(_)
            | TriggerConfig::Amqp(_)
            | TriggerConfig::Mqtt(_)
            | TriggerConfig::Redis(_)
            | TriggerConfig::Postgres(_) => None,
        }
    }

    fn sink(
        &self,
        name: &str,
        config: &Spanned<SinkConfig>,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<dyn Sink>, Diagnostic> {
        match &config.value {
            SinkConfig::File(file) => Ok(Arc::new(file::FileSink::new(name, file, cx)?)),
            SinkConfig::Stdout(stdout) => Ok(Arc::new(stdout::StdoutSink::new(stdout))),
            SinkConfig::Http(http) => Ok(Arc::new(http::HttpSink::new(http, cx)?)),
            SinkConfig::Nats(nats) => {
                Ok(Arc::new(nats::NatsSink::new(nats, self.nats.clone(), cx)?))
            }
            SinkConfig::Channel(channel) => self.channels.sink(channel, cx),
            SinkConfig::Amqp(amqp) => Ok(Arc::new(amqp::AmqpSink::new(amqp, cx)?)),
            SinkConfig::Mqtt(mqtt) => Ok(Arc::new(mqtt::MqttSink::new(mqtt, cx)?)),
            SinkConfig::Redis(redis) => Ok(Arc::new(redis_streams::RedisSink::new(redis, cx)?)),
            SinkConfig::Postgres(pg) => Ok(Arc::new(postgres::PostgresSink::new(pg, cx)?)),
        }
    }

    fn trigger(
        &self,
        config: &Spanned<TriggerConfig>,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn Trigger>, Diagnostic> {
        match &config.value {
            TriggerConfig::File(file) => Ok(Box::new(file::FileTrigger::new(file, cx)?)),
            TriggerConfig::Http(config) => Ok(Box::new(http::HttpTrigger::new(
                self.http.clone(),
                config,
                cx,
            )?)),
            TriggerConfig::Schedule(config) => {
                Ok(Box::new(schedule::ScheduleTrigger::new(config, cx)?))
            }
            TriggerConfig::Nats(nats) => Ok(Box::new(nats::NatsTrigger::new(
                nats,
                self.nats.clone(),
                cx,
            )?)),
            TriggerConfig::Channel(channel) => self.channels.trigger(channel, cx),
            TriggerConfig::Amqp(amqp) => Ok(Box::new(amqp::AmqpTrigger::new(amqp, cx)?)),
            TriggerConfig::Mqtt(mqtt) => Ok(Box::new(mqtt::MqttTrigger::new(mqtt, cx)?)),
            TriggerConfig::Redis(redis) => {
                Ok(Box::new(redis_streams::RedisTrigger::new(redis, cx)?))
            }
            TriggerConfig::Postgres(pg) => Ok(Box::new(postgres::OutboxTrigger::new(pg, cx)?)),
        }
    }
}
