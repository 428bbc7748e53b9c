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
pub mod nats;
pub mod postgres;
pub mod redis_streams;
pub mod stdout;

use sluice_engine::{BuildContext, Connectors, Sink, Trigger};
use sluice_flow::{Diagnostic, Settings, SinkConfig, Spanned, TriggerConfig};
use std::sync::Arc;

/// Every connector that ships with sluice, with the state they share in one process: the
/// broker connections and the channel backend (the in-process hub by default).
#[derive(Debug, Default, Clone)]
pub struct StandardConnectors {
    nats: nats::NatsClients,
    channels: channel::Channels,
}

impl StandardConnectors {
    /// The connectors configured by `sluice.yaml` (see [`Settings`]).
    pub fn new(settings: &Settings) -> Self {
        let nats = nats::NatsClients::default();
        StandardConnectors {
            channels: channel::Channels::new(settings, nats.clone()),
            nats,
        }
    }
}

impl Connectors for StandardConnectors {
    fn sink(
        &self,
        name: &str,
        config: &Spanned<SinkConfig>,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<dyn Sink>, Diagnostic> {
        match &config.value {
            SinkConfig::File(file) => Ok(Arc::new(file::FileSink::new(name, file, cx)?)),
            SinkConfig::Stdout(stdout) => Ok(Arc::new(stdout::StdoutSink::new(stdout))),
            SinkConfig::Nats(nats) => {
                Ok(Arc::new(nats::NatsSink::new(nats, self.nats.clone(), cx)?))
            }
            SinkConfig::Channel(channel) => self.channels.sink(channel, cx),
            SinkConfig::Amqp(amqp) => Ok(Arc::new(amqp::AmqpSink::new(amqp, cx)?)),
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
            TriggerConfig::Nats(nats) => Ok(Box::new(nats::NatsTrigger::new(
                nats,
                self.nats.clone(),
                cx,
            )?)),
            TriggerConfig::Channel(channel) => self.channels.trigger(channel, cx),
            TriggerConfig::Amqp(amqp) => Ok(Box::new(amqp::AmqpTrigger::new(amqp, cx)?)),
            TriggerConfig::Redis(redis) => {
                Ok(Box::new(redis_streams::RedisTrigger::new(redis, cx)?))
            }
            TriggerConfig::Postgres(pg) => Ok(Box::new(postgres::OutboxTrigger::new(pg, cx)?)),
        }
    }
}
