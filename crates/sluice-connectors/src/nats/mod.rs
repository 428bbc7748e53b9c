//! The `nats` connector: a JetStream durable pull consumer (or a core NATS subscription) as
//! trigger, and a JetStream (or core NATS) publisher as sink.
//!
//! Connections are shared per URL by every flow of the process ([`NatsClients`]); the client
//! reconnects by itself with a capped exponential delay, and the trigger rebuilds its consumer
//! when the message stream breaks.

mod sink;
mod trigger;

pub use sink::NatsSink;
pub(crate) use trigger::JetStreamSource;
pub use trigger::NatsTrigger;

use async_nats::jetstream::{consumer, context, stream};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong talking to a NATS server. A trigger shows it as the flow's unhealthy
/// reason and connects again; a sink fails the write with a retryable `sink` error. A URL
/// in it is the shown form, without user info or query (where credentials live).
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The connection could not be opened (server down, refused login, TLS).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The server, without credentials.
        url: String,
        /// The client's reason.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The JetStream stream could not be looked up or created.
    #[error("stream `{stream}`: {source}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// The server's or the client's reason.
        #[source]
        source: context::CreateStreamError,
    },
    /// The durable consumer could not be looked up or created.
    #[error("consumer `{durable}`: {source}")]
    Consumer {
        /// The durable consumer's name.
        durable: String,
        /// The server's or the client's reason.
        #[source]
        source: stream::ConsumerError,
    },
    /// The pull subscription of the durable consumer could not be started.
    #[error("consumer `{durable}`: {source}")]
    Pull {
        /// The durable consumer's name.
        durable: String,
        /// The client's reason.
        #[source]
        source: consumer::StreamError,
    },
    /// A pull request of the durable consumer failed while consuming.
    #[error("consumer `{durable}`: {source}")]
    Messages {
        /// The durable consumer's name.
        durable: String,
        /// The client's reason.
        #[source]
        source: consumer::pull::MessagesError,
    },
    /// The JetStream message stream ended without being asked to (the client gave up).
    #[error("the message stream ended")]
    StreamEnded,
    /// A core NATS subscription could not be made.
    #[error("subscribe `{subject}`: {source}")]
    Subscribe {
        /// The subject (or wildcard) subscribed to.
        subject: String,
        /// The client's reason.
        #[source]
        source: async_nats::SubscribeError,
    },
    /// A core NATS subscription ended without being asked to.
    #[error("the subscription ended")]
    SubscriptionEnded,
    /// A subject that is not a valid template (only channels build one outside a flow file).
    #[error("{message}")]
    Subject {
        /// The subject as given.
        subject: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Open NATS connections, one per URL, shared by the triggers and sinks of every flow.
#[derive(Clone, Default)]
pub struct NatsClients {
    clients: Arc<tokio::sync::Mutex<HashMap<String, async_nats::Client>>>,
}

impl std::fmt::Debug for NatsClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may hold credentials: never print them.
        f.write_str("NatsClients")
    }
}

impl NatsClients {
    /// The connection to `url`, opened on first use. The error shows the URL without its
    /// credentials.
    pub(crate) async fn get(&self, url: &str) -> Result<async_nats::Client, NatsError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(url) {
            return Ok(client.clone());
        }
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("sluice")
            // Capped exponential backoff between reconnect attempts, for ever: a broker
            // that comes back is picked up without a restart of sluice.
            .reconnect_delay_callback(|attempt| {
                let exp = attempt.min(8) as u32;
                Duration::from_millis(50 * 2u64.pow(exp)).min(Duration::from_secs(5))
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats: connected"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("nats: disconnected; reconnecting")
                    }
                    other => tracing::debug!("nats: {other}"),
                }
            });
        let client = options
            .connect(url)
            .await
            .map_err(|source| NatsError::Connect {
                url: crate::shown_url(url),
                source,
            })?;
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }
}

impl crate::TriggerComponent for sluice_flow::NatsTriggerConfig {
    const KEY: &'static str = "nats";

    fn build(
        &self,
        shared: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, sluice_flow::Diagnostic> {
        Ok(Box::new(trigger::NatsTrigger::new(
            self,
            shared.nats.clone(),
            cx,
        )?))
    }

    fn describe(&self) -> String {
        match &self.stream {
            Some(stream) => format!(
                "nats stream {} subject {}",
                stream.value, self.subject.value
            ),
            None => format!("nats subject {}", self.subject.value),
        }
    }

    fn url(&self) -> Option<&str> {
        Some(self.url.value.as_str())
    }
}

impl crate::SinkComponent for sluice_flow::NatsSinkConfig {
    const KEY: &'static str = "nats";

    fn build(
        &self,
        _: &str,
        shared: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(sink::NatsSink::new(
            self,
            shared.nats.clone(),
            cx,
        )?))
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
    async fn a_failed_connect_names_the_server_but_not_the_password() {
        let port = closed_port();
        let url = format!("nats://sluice:hunter2@127.0.0.1:{port}");
        let error = NatsClients::default().get(&url).await.unwrap_err();
        assert!(matches!(error, NatsError::Connect { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot connect to NATS at nats://127.0.0.1:{port}: "
            )),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && !text.contains("sluice:"),
            "{text}"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
