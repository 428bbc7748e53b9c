//! The `redis` connector: Redis Streams. The trigger reads through a consumer group
//! (`XREADGROUP`), acknowledges (`XACK`) after the flow's sinks confirmed, and claims the
//! pending entries of dead consumers (`XAUTOCLAIM`); the sink appends with `XADD`.
//!
//! (The module is not called `redis` so that it does not shadow the `redis` crate.)

mod sink;
mod trigger;

pub use sink::RedisSink;
pub use trigger::RedisTrigger;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ClientTlsConfig, TlsCertificates};
use sluice_engine::BuildContext;
use sluice_flow::{Diagnostic, Spanned, Text, TlsFiles};
use std::time::Duration;

/// The entry field carrying the sluice message id.
pub(crate) const MESSAGE_ID_FIELD: &str = "message_id";
/// The entry field carrying the correlation id.
pub(crate) const CORRELATION_ID_FIELD: &str = "correlation_id";

/// What went wrong talking to Redis. The trigger shows it as the flow's unhealthy reason and
/// connects again; the sink fails the write with a `sink` error (permanent for a URL that
/// cannot be read, retryable otherwise). The URL in it is the shown form, without user info
/// or query (where credentials live).
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL is not one the client can use.
    #[error("invalid Redis URL {url}: {source}")]
    Url {
        /// The URL, without credentials.
        url: String,
        /// The client's reason.
        #[source]
        source: redis::RedisError,
    },
    /// The connection could not be opened (server down, refused login).
    #[error("cannot connect to Redis at {url}: {}", crate::error_chain(.source))]
    Connect {
        /// The server, without credentials.
        url: String,
        /// The client's reason.
        #[source]
        source: redis::RedisError,
    },
    /// The server did not answer the connection in time.
    #[error("cannot connect to Redis at {url}: timed out")]
    ConnectTimeout {
        /// The server, without credentials.
        url: String,
    },
    /// A command of the consumer failed (the connection broke, or the server refused it).
    #[error("{command}: {source}")]
    Command {
        /// The command, e.g. `XREADGROUP`.
        command: &'static str,
        /// The server's or the client's reason.
        #[source]
        source: redis::RedisError,
    },
}

/// Opens a client, with the certificates of the `tls:` settings for a `rediss://` URL. The
/// error shows the URL without its credentials.
fn client(url: &str, tls: Option<&TlsCertificates>) -> Result<redis::Client, RedisError> {
    match tls {
        Some(certificates) => redis::Client::build_with_tls(url, certificates.clone()),
        None => redis::Client::open(url),
    }
    .map_err(|source| RedisError::Url {
        url: crate::shown_url(url),
        source,
    })
}

/// Reads the `tls:` settings of a trigger or sink at load: they need a `rediss://` URL, and
/// their files are read now, so a missing or broken one is a load error at its position.
/// `None` for a plain `redis://` URL.
fn load_tls(
    url: &Spanned<Text>,
    tls: Option<&Spanned<TlsFiles>>,
    cx: &BuildContext<'_>,
) -> Result<Option<TlsCertificates>, Diagnostic> {
    let secure = url.value.starts_with("rediss://");
    if !secure {
        return match tls {
            Some(settings) => Err(cx
                .diagnostic(settings, "`tls` settings need a `rediss://` URL")
                .with_help("write the url as rediss://host:6379, or remove `tls`")),
            None => Ok(None),
        };
    }
    // The redis client builds its rustls configuration with the process's default provider.
    sluice_engine::use_ring();
    let files = tls
        .map(|t| crate::tls::Files::from(&t.value))
        .unwrap_or_default();
    let loaded = crate::tls::Loaded::read(files, cx)?;
    Ok(Some(TlsCertificates {
        client_tls: loaded.identity.map(|identity| ClientTlsConfig {
            client_cert: identity.chain_pem,
            client_key: identity.key_pem,
        }),
        root_cert: loaded.ca.map(|(_, pem)| pem),
    }))
}

/// A self-reconnecting connection (capped exponential backoff) for commands that do not
/// block; `url` names the server in an error.
async fn manager(client: redis::Client, url: &str) -> Result<ConnectionManager, RedisError> {
    let probe = client.clone();
    let config = ConnectionManagerConfig::new()
        .set_max_delay(Duration::from_secs(5))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    match tokio::time::timeout(
        Duration::from_secs(10),
        ConnectionManager::new_with_config(probe, config),
    )
    .await
    {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(source)) => Err(RedisError::Connect {
            url: crate::shown_url(url),
            source,
        }),
        // The manager retries its first connection by itself and keeps no reason; one direct
        // attempt finds it (a refused certificate, a refused login).
        Err(_) => match tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Err(source)) => Err(RedisError::Connect {
                url: crate::shown_url(url),
                source,
            }),
            _ => Err(RedisError::ConnectTimeout {
                url: crate::shown_url(url),
            }),
        },
    }
}

impl crate::TriggerComponent for sluice_flow::RedisTriggerConfig {
    const KEY: &'static str = "redis";

    fn build(
        &self,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, sluice_flow::Diagnostic> {
        Ok(Box::new(trigger::RedisTrigger::new(self, cx)?))
    }

    fn describe(&self) -> String {
        format!("redis stream {}", self.stream.value)
    }

    fn url(&self) -> Option<&str> {
        Some(self.url.value.as_str())
    }
}

impl crate::SinkComponent for sluice_flow::RedisSinkConfig {
    const KEY: &'static str = "redis";

    fn build(
        &self,
        _: &str,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(sink::RedisSink::new(self, cx)?))
    }
}
