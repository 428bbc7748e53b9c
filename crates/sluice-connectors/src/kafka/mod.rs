//! The `kafka` connector, on librdkafka (the `rdkafka` crate, built from its bundled
//! sources). The trigger is a consumer group whose offsets are committed only for messages
//! the flow's sinks (or dead letter) confirmed, contiguously per partition; the sink is an
//! idempotent producer whose write returns once the broker acknowledged it.

mod context;
mod message;
mod offsets;
mod run;
mod sink;
mod trigger;

pub use sink::{DeliveryError, KafkaSink};
pub use trigger::KafkaTrigger;

use rdkafka::ClientConfig;
use sluice_engine::BuildContext;
use sluice_flow::{Diagnostic, Spanned, Text};
use std::collections::BTreeMap;

/// The header carrying the sluice message id.
pub(crate) const MESSAGE_ID_HEADER: &str = "message_id";
/// The header carrying the correlation id.
pub(crate) const CORRELATION_ID_HEADER: &str = "correlation_id";

/// A librdkafka property that a flow sets through a key of its own (or that sluice decides),
/// and the key to use instead.
type Owned = (&'static str, &'static str);

/// Builds the client configuration shared by the trigger and the sink: the brokers, then
/// the flow's `options` (each checked by librdkafka now, so a mistake is a load error at its
/// value), refusing the properties in `owned`.
fn client_config(
    brokers: &Spanned<Text>,
    options: &BTreeMap<String, Spanned<Text>>,
    owned: &[Owned],
    cx: &BuildContext<'_>,
) -> Result<ClientConfig, Diagnostic> {
    let list = brokers.value.as_str();
    if list.split(',').all(|b| b.trim().is_empty()) {
        return Err(cx
            .diagnostic(brokers, "`brokers` is empty")
            .with_help("list the bootstrap brokers as `host:port`, comma-separated"));
    }
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", list);
    // librdkafka's log lines go through `tracing` (the rdkafka crate's `tracing` feature),
    // at the level `RUST_LOG` enables for them.
    for (key, value) in options {
        if let Some((_, instead)) = owned.iter().find(|(name, _)| *name == key.as_str()) {
            return Err(cx
                .diagnostic(value, format!("`options` may not set `{key}`"))
                .with_help(format!("sluice decides it: {instead}")));
        }
        let mut one = ClientConfig::new();
        one.set(key, value.value.as_str());
        if let Err(e) = one.create_native_config() {
            // The description only: the value may be a secret.
            let why = match e {
                rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
                other => other.to_string(),
            };
            return Err(cx
                .diagnostic(value, format!("librdkafka refuses `{key}`: {why}"))
                .with_help("`options` takes librdkafka properties (see its CONFIGURATION.md)"));
        }
        config.set(key, value.value.as_str());
    }
    Ok(config)
}

/// The message ids sluice puts in the headers it produces, read back by the trigger.
fn header_text(value: Option<&[u8]>) -> Option<&str> {
    value.and_then(|v| std::str::from_utf8(v).ok())
}

impl crate::TriggerComponent for sluice_flow::KafkaTriggerConfig {
    const KEY: &'static str = "kafka";

    fn build(
        &self,
        _: &crate::StandardConnectors,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, Diagnostic> {
        Ok(Box::new(trigger::KafkaTrigger::new(self, cx)?))
    }

    fn describe(&self) -> String {
        let topics: Vec<&str> = self.topics.value.iter().map(|t| t.value.as_str()).collect();
        format!(
            "kafka topics {} group {}",
            topics.join(","),
            self.group.value
        )
    }

    fn url(&self) -> Option<&str> {
        Some(self.brokers.value.as_str())
    }
}

impl crate::SinkComponent for sluice_flow::KafkaSinkConfig {
    const KEY: &'static str = "kafka";

    fn build(
        &self,
        _: &str,
        _: &crate::StandardConnectors,
        cx: &BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, Diagnostic> {
        Ok(std::sync::Arc::new(sink::KafkaSink::new(self, cx)?))
    }
}
