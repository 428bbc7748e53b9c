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
use std::time::Duration;

/// The entry field carrying the sluice message id.
pub const MESSAGE_ID_FIELD: &str = "message_id";
/// The entry field carrying the correlation id.
pub const CORRELATION_ID_FIELD: &str = "correlation_id";

/// Opens a client. The error never contains the URL (it may hold credentials).
fn client(url: &str) -> Result<redis::Client, String> {
    redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))
}

/// A self-reconnecting connection (capped exponential backoff) for commands that do not block.
async fn manager(client: redis::Client) -> Result<ConnectionManager, String> {
    let config = ConnectionManagerConfig::new()
        .set_max_delay(Duration::from_secs(5))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    match tokio::time::timeout(
        Duration::from_secs(10),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(e)) => Err(format!("cannot connect to Redis: {e}")),
        Err(_) => Err("cannot connect to Redis: timed out".to_owned()),
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
