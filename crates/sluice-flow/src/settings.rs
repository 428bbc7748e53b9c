//! `sluice.yaml`: settings of one sluice installation that are not part of any flow, so the
//! same flow files run unchanged on a laptop and across several machines.

use crate::Text;
use serde::Deserialize;
use std::path::Path;

/// The whole of `sluice.yaml`; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where flow-to-flow channels live.
    #[serde(default)]
    pub channels: ChannelSettings,
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
        serde_saphyr::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))
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
    fn unknown_keys_are_refused() {
        assert!(serde_saphyr::from_str::<Settings>("chanels: {}\n").is_err());
    }
}
