//! `sluice.yaml`: settings of one sluice installation that are not part of any flow, so the
//! same flow files run unchanged on a laptop and across several machines.

use crate::{ByteSize, Dur, Text};
use serde::Deserialize;
use std::path::{Path, PathBuf};
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

/// Why `sluice.yaml` was refused; `sluice run` stops with it before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file exists but cannot be read.
    #[error("cannot read `{}`: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, or has a key or value the settings do not take (the
    /// parser's message has the line and column).
    #[error("`{}`: {source}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        #[source]
        source: serde_saphyr::Error,
    },
    /// A listener limit of 0, which would switch a protection off.
    #[error(
        "`http.{key}` must be greater than 0 (0 would refuse everything); the default is {default}"
    )]
    ZeroLimit {
        /// The key under `http:`.
        key: &'static str,
        /// Its default, as it would be written.
        default: &'static str,
    },
    /// A refused value, with the file it is in.
    #[error("`{}`: {source}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<SettingsError>,
    },
}

impl Settings {
    /// Reads `sluice.yaml` in `dir`; a missing file means the defaults.
    pub fn load(dir: &Path) -> Result<Settings, SettingsError> {
        let path = dir.join("sluice.yaml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => return Err(SettingsError::Read { path, source }),
        };
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        let settings: Settings = match serde_saphyr::from_str(&text) {
            Ok(settings) => settings,
            Err(source) => return Err(SettingsError::Parse { path, source }),
        };
        if let Err(e) = settings.http.check() {
            return Err(SettingsError::Invalid {
                path,
                source: Box::new(e),
            });
        }
        Ok(settings)
    }
}

impl HttpListenerSettings {
    /// Refuses limits that would switch a protection off.
    pub fn check(&self) -> Result<(), SettingsError> {
        let zero = |key, default| Err(SettingsError::ZeroLimit { key, default });
        if self.max_connections == 0 {
            return zero("max_connections", "1024");
        }
        if self.header_timeout.0.is_zero() {
            return zero("header_timeout", "10s");
        }
        if self.body_timeout.0.is_zero() {
            return zero("body_timeout", "30s");
        }
        if self.max_body_in_flight.0 == 0 {
            return zero("max_body_in_flight", "64MiB");
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
        assert_eq!(
            zero.http.check().unwrap_err().to_string(),
            "`http.max_connections` must be greater than 0 (0 would refuse everything); the default is 1024"
        );
        let dir = tempfile_dir();
        std::fs::write(dir.join("sluice.yaml"), "http: { body_timeout: 0s }\n").unwrap();
        let error = Settings::load(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            error,
            format!(
                "`{}`: `http.body_timeout` must be greater than 0 (0 would refuse everything); the default is 30s",
                dir.join("sluice.yaml").display()
            )
        );
    }

    /// A fresh directory for one test (sluice-flow has no tempfile dev-dependency).
    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-flow-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_saphyr::from_str::<Settings>("chanels: {}\n").is_err());
    }
}
