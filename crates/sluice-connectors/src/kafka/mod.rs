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

#[cfg(test)]
mod tests {
    use crate::StandardConnectors;
    use sluice_engine::{BuildContext, Connectors};

    /// Builds the flow's trigger and its sink `out`; the first load error, as text.
    fn build(trigger: &str, sink: &str) -> Result<(), String> {
        let source = format!("trigger:\n  kafka: {trigger}\nsinks:\n  out:\n    kafka: {sink}\n");
        let loaded = sluice_flow::parse_flow(std::path::Path::new("flows/k.yaml"), source)
            .map_err(|d| d.to_string())?;
        let connectors = StandardConnectors::default();
        let cx = BuildContext { flow: &loaded };
        connectors
            .trigger(&loaded.file.trigger, &cx)
            .map_err(|d| d.to_string())?;
        connectors
            .sink("out", &loaded.file.sinks["out"], &cx)
            .map_err(|d| d.to_string())?;
        Ok(())
    }

    const TRIGGER: &str = "{ topics: [orders, \"^audit-.*\"], group: g }";
    const SINK: &str = "{ topic: \"out-{{region}}\", key: \"{{id}}\" }";

    #[test]
    fn a_trigger_and_a_sink_build_without_a_broker() {
        build(TRIGGER, SINK).unwrap();
        build(
            "{ topics: [a], group: g, options: { fetch.max.bytes: \"1048576\" } }",
            "{ topic: t, options: { client.id: sluice } }",
        )
        .unwrap();
    }

    #[test]
    fn options_sluice_decides_are_refused_at_their_value() {
        let e = build(
            "{ topics: [a], group: g, options: { enable.auto.commit: \"true\" } }",
            SINK,
        )
        .unwrap_err();
        assert!(
            e.contains("flows/k.yaml:2:") && e.contains("may not set `enable.auto.commit`"),
            "{e}"
        );
        let e = build(TRIGGER, "{ topic: t, options: { acks: \"1\" } }").unwrap_err();
        assert!(
            e.contains("flows/k.yaml:5:") && e.contains("acks=all"),
            "{e}"
        );
    }

    #[test]
    fn a_property_librdkafka_refuses_is_a_load_error() {
        let e = build(TRIGGER, "{ topic: t, options: { no.such.thing: x } }").unwrap_err();
        assert!(e.contains("librdkafka refuses `no.such.thing`"), "{e}");
        let e = build(TRIGGER, "{ topic: t, options: { batch.size: \"-5\" } }").unwrap_err();
        assert!(
            e.contains("librdkafka refuses `batch.size`") && !e.contains("-5\""),
            "{e}"
        );
    }

    #[cfg(not(feature = "kafka-tls"))]
    #[test]
    fn tls_needs_the_kafka_tls_feature() {
        let e = build(
            "{ topics: [a], group: g, options: { security.protocol: ssl } }",
            SINK,
        )
        .unwrap_err();
        assert!(e.contains("librdkafka refuses `security.protocol`"), "{e}");
    }

    #[cfg(feature = "kafka-tls")]
    #[test]
    fn tls_and_sasl_build_with_the_kafka_tls_feature() {
        build(
            "{ topics: [a], group: g, options: { security.protocol: sasl_ssl, sasl.mechanisms: SCRAM-SHA-256, sasl.username: u, sasl.password: p } }",
            "{ topic: t, options: { security.protocol: ssl } }",
        )
        .unwrap();
    }

    #[test]
    fn topics_group_and_timings_are_checked() {
        let e = build("{ topics: [], group: g }", SINK).unwrap_err();
        assert!(e.contains("`topics` is empty"), "{e}");
        let e = build("{ topics: [\"a b\"], group: g }", SINK).unwrap_err();
        assert!(e.contains("not") || e.contains("contains"), "{e}");
        let e = build(
            "{ topics: [a], group: g, session_timeout: 6s, heartbeat_interval: 6s }",
            SINK,
        )
        .unwrap_err();
        assert!(e.contains("below `session_timeout`"), "{e}");
        let e = build(TRIGGER, "{ topic: \"{{\" }").unwrap_err();
        assert!(e.contains("flows/k.yaml:5:"), "{e}");
        let e = build("{ topics: [a], group: g, brokers: \" , \" }", SINK).unwrap_err();
        assert!(e.contains("`brokers` is empty"), "{e}");
    }
}
