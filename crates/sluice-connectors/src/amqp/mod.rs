//! The `amqp` connector (RabbitMQ, through lapin with rustls): a queue consumer whose
//! deliveries are acknowledged after the flow's sinks confirmed, and a publisher that waits
//! for the broker's publisher confirm.

mod sink;
mod trigger;

pub use sink::AmqpSink;
pub use trigger::AmqpTrigger;

use lapin::types::AMQPValue;

/// What went wrong talking to the AMQP broker. The trigger shows it as the flow's unhealthy
/// reason and connects again; the sink fails the write with a retryable `sink` error. The
/// URL in it is the shown form, without user info or query (where credentials live).
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The connection could not be opened (broker down, refused login, TLS).
    #[error("cannot connect to the AMQP broker at {url}: {source}")]
    Connect {
        /// The broker, without credentials.
        url: String,
        /// The client's reason.
        #[source]
        source: lapin::Error,
    },
    /// The broker did not complete the connection handshake in time.
    #[error("cannot connect to the AMQP broker at {url}: timed out after {}s", .after.as_secs())]
    ConnectTimeout {
        /// The broker, without credentials.
        url: String,
        /// How long the handshake was given.
        after: std::time::Duration,
    },
    /// A channel could not be opened on the connection.
    #[error("channel: {0}")]
    Channel(#[source] lapin::Error),
    /// The queue could not be declared (e.g. it exists with other arguments).
    #[error("queue `{queue}`: {source}")]
    Declare {
        /// The queue's name.
        queue: String,
        /// The broker's reason.
        #[source]
        source: lapin::Error,
    },
    /// The prefetch window could not be set.
    #[error("basic.qos: {0}")]
    Qos(#[source] lapin::Error),
    /// The consumer could not be started on the queue.
    #[error("consume `{queue}`: {source}")]
    Consume {
        /// The queue's name.
        queue: String,
        /// The broker's reason.
        #[source]
        source: lapin::Error,
    },
    /// The broker cancelled the consumer (the queue was deleted, or the node went away).
    #[error("the consumer was cancelled")]
    Cancelled,
    /// A delivery could not be received.
    #[error("consumer: {0}")]
    Delivery(#[source] lapin::Error),
}

/// How long the connection handshake may take before the attempt counts as failed.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to the broker. The error shows the URL without its credentials.
async fn connect(url: &str) -> Result<lapin::Connection, AmqpError> {
    let properties = lapin::ConnectionProperties::default().with_connection_name("sluice".into());
    match tokio::time::timeout(CONNECT_TIMEOUT, lapin::Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(AmqpError::Connect {
            url: crate::shown_url(url),
            source,
        }),
        Err(_) => Err(AmqpError::ConnectTimeout {
            url: crate::shown_url(url),
            after: CONNECT_TIMEOUT,
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nothing listens on: bound once by the OS, then released.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("a bound address").port()
    }

    #[tokio::test]
    async fn a_failed_connect_names_the_broker_but_not_the_password() {
        let port = closed_port();
        let url = format!("amqp://guest:hunter2@127.0.0.1:{port}/%2f?heartbeat=5");
        let error = connect(&url).await.expect_err("nothing listens there");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot connect to the AMQP broker at amqp://127.0.0.1:{port}/%2f: "
            )),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && !text.contains("heartbeat"),
            "{text}"
        );
    }
}
