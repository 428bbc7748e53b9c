//! The `amqp` connector (RabbitMQ, through lapin with rustls): a queue consumer whose
//! deliveries are acknowledged after the flow's sinks confirmed, and a publisher that waits
//! for the broker's publisher confirm.

mod sink;
mod trigger;

pub use sink::AmqpSink;
pub use trigger::AmqpTrigger;

use lapin::types::AMQPValue;

/// Connects to the broker. The error never contains the URL (it may hold credentials).
async fn connect(url: &str) -> Result<lapin::Connection, String> {
    let properties = lapin::ConnectionProperties::default().with_connection_name("sluice".into());
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        lapin::Connection::connect(url, properties),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(format!("cannot connect to the AMQP broker: {e}")),
        Err(_) => Err("cannot connect to the AMQP broker: timed out after 10s".to_owned()),
    }
}

/// A header value as text, for message metadata; `None` for tables, arrays and bytes.
fn header_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

impl crate::TriggerComponent for sluice_flow::AmqpTriggerConfig {
    const KEY: &'static str = "amqp";

    fn build(
        &self,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, sluice_flow::Diagnostic> {
        Ok(Box::new(trigger::AmqpTrigger::new(self, cx)?))
    }

    fn describe(&self) -> String {
        format!("amqp queue {}", self.queue.value)
    }

    fn url(&self) -> Option<&str> {
        Some(self.url.value.as_str())
    }
}

impl crate::SinkComponent for sluice_flow::AmqpSinkConfig {
    const KEY: &'static str = "amqp";

    fn build(
        &self,
        _: &str,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(sink::AmqpSink::new(self, cx)?))
    }
}
