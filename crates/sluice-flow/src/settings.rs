//! `sluice.yaml`: settings of one sluice installation that are not part of any flow, so the
//! same flow files run unchanged on a laptop and across several machines.

use crate::{ByteSize, Dur, Text};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The whole of `sluice.yaml`; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where flow-to-flow channels live.
    #[serde(default)]
    pub channels: ChannelSettings,
    /// Limits of the HTTP listener shared by every `http` trigger.
    #[serde(default)]
    pub http: HttpListenerSettings,
}

/// What one client (or many) can hold of the HTTP listener. Every limit is on by default:
/// half-sent requests and unfinished bodies are what an attacker sends first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListenerSettings {
    /// Connections served at once; further ones wait in the kernel's accept queue, so they
    /// use no file descriptor of this process.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time for the request line and headers to arrive (also how long an idle keep-alive
    /// connection stays open); then the connection is closed.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// Time for the whole body to arrive once the headers are in; then 408.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Dur,
    /// Request-body bytes buffered at once across all requests; a request waits for its
    /// share (within `body_timeout`), so memory stays bounded however many clients send.
    #[serde(default = "default_max_body_in_flight")]
    pub max_body_in_flight: ByteSize,
}

impl Default for HttpListenerSettings {
    fn default() -> Self {
        HttpListenerSettings {
            max_connections: default_max_connections(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            max_body_in_flight: default_max_body_in_flight(),
        }
    }
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_body_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_max_body_in_flight() -> ByteSize {
    ByteSize(64 << 20)
}

/// The backend behind every `channel` trigger and sink.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// `in_process` (default) or `nats`.
    #[serde(default)]
    pub backend: ChannelBackend,
    /// NATS server URL(s), for `backend: nats`.
    pub url: Option<Text>,
}

/// Where channel messages travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelBackend {
    /// Bounded queues inside this process.
    #[default]
    InProcess,
    /// One JetStream stream per channel, with a durable consumer.
    Nats,
}

impl Settings {
    /// Reads `sluice.yaml` in `dir`; a missing file means the defaults.
    pub fn load(dir: &Path) -> Result<Settings, String> {
        let path = dir.join("sluice.yaml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        };
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        let settings: Settings =
            serde_saphyr::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))?;
        settings
            .http
            .check()
            .map_err(|e| format!("`{}`: {e}", path.display()))?;
        Ok(settings)
    }
}

impl HttpListenerSettings {
    /// Refuses limits that would switch a protection off.
    pub fn check(&self) -> Result<(), String> {
        let zero = |key: &str, hint: &str| {
            format!("`http.{key}` must be greater than 0 (0 would refuse everything); {hint}")
        };
        if self.max_connections == 0 {
            return Err(zero("max_connections", "the default is 1024"));
        }
        if self.header_timeout.0.is_zero() {
            return Err(zero("header_timeout", "the default is 10s"));
        }
        if self.body_timeout.0.is_zero() {
            return Err(zero("body_timeout", "the default is 30s"));
        }
        if self.max_body_in_flight.0 == 0 {
            return Err(zero("max_body_in_flight", "the default is 64MiB"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nats_backend_parses() {
        let s: Settings =
            serde_saphyr::from_str("channels: { backend: nats, url: \"nats://h:1\" }\n").unwrap();
        assert_eq!(s.channels.backend, ChannelBackend::Nats);
        assert_eq!(s.channels.url.unwrap().as_str(), "nats://h:1");
    }

    #[test]
    fn http_listener_limits_parse_and_zero_is_refused() {
        let s: Settings = serde_saphyr::from_str(
            "http: { max_connections: 10, header_timeout: 2s, max_body_in_flight: 8MiB }\n",
        )
        .unwrap();
        assert_eq!(s.http.max_connections, 10);
        assert_eq!(s.http.header_timeout.0, Duration::from_secs(2));
        assert_eq!(s.http.body_timeout.0, Duration::from_secs(30));
        assert_eq!(s.http.max_body_in_flight.0, 8 << 20);
        let zero: Settings = serde_saphyr::from_str("http: { max_connections: 0 }\n").unwrap();
        assert!(zero.http.check().unwrap_err().contains("max_connections"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_saphyr::from_str::<Settings>("chanels: {}\n").is_err());
    }
}
