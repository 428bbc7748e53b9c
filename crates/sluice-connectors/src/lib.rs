//! sluice's triggers and sinks, one module per connector.
//!
//! A connector is a config struct from `sluice-flow` plus an implementation of the engine's
//! [`Trigger`](sluice_engine::Trigger) or [`Sink`](sluice_engine::Sink) trait; acks, retries
//! and concurrency belong to the engine. Each config type declares itself once, in its
//! connector's module, by implementing [`TriggerComponent`] or [`SinkComponent`]; the one
//! list at the end of this file registers them, and [`StandardConnectors`] (what the binary
//! hands to the engine) dispatches through it. The broker connectors are cargo features,
//! all on by default.

// A `Diagnostic` carries its snippet and hints; it is built once per mistake, on a cold
// path, so returning it unboxed is simpler and costs nothing that matters.
#![allow(clippy::result_large_err)]
// Both crates are read by connector and step authors; every public item says what it is for.
#![warn(missing_docs)]

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod channel;
pub mod codec;
mod component;
pub mod file;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(any(feature = "nats", feature = "redis", feature = "amqp"))]
mod lag;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis_streams;
pub mod schedule;
#[cfg(feature = "sftp")]
pub mod sftp;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql;
pub mod stdout;
#[cfg(any(feature = "mqtt", feature = "redis", feature = "postgres"))]
mod tls;

pub use component::{SinkComponent, TriggerComponent};

use sluice_engine::{BuildContext, Connectors, Sink, SinkInfo, Trigger, TriggerInfo, TriggerKey};
use sluice_flow as model;
use sluice_flow::{Diagnostic, Settings, SinkConfig, Spanned, TriggerConfig};
use std::sync::Arc;

/// A broker URL as an error shows it: without user info or query, where credentials live.
/// Errors are printed in log lines, unhealthy reasons and dead letters, so none carries the
/// URL as configured. A PostgreSQL `key=value` connection string is no URL and may hold a
/// `password=`: it is not shown at all.
#[cfg_attr(
    not(any(
        feature = "nats",
        feature = "amqp",
        feature = "redis",
        feature = "postgres",
        feature = "mysql"
    )),
    allow(dead_code)
)]
pub(crate) fn shown_url(url: &str) -> String {
    if url.contains("://") {
        sluice_engine::without_credentials(url)
    } else {
        "(a connection string, not shown)".to_owned()
    }
}

/// An error with the reasons under it (`source()`), joined with `: `, for clients whose
/// message alone hides the cause (tokio-postgres says "error performing TLS handshake", its
/// source says which certificate was refused). A source already part of the text is skipped.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = source.source();
    }
    text
}

/// Every connector that ships with sluice, with the resources they share (the HTTP
/// listener, the NATS connections, the channel backend).
#[derive(Clone)]
pub struct StandardConnectors {
    http: Arc<http::HttpHub>,
    #[cfg(feature = "nats")]
    nats: nats::NatsClients,
    channels: channel::Channels,
}

impl Default for StandardConnectors {
    /// Connectors for commands that never run triggers (`check`, `test`, `exec`).
    fn default() -> Self {
        StandardConnectors::new(http::HttpHub::new("127.0.0.1:8080"))
    }
}

impl StandardConnectors {
    /// Connectors sharing `http` as the listener of every `http` trigger.
    pub fn new(http: Arc<http::HttpHub>) -> Self {
        #[cfg(feature = "nats")]
        let nats = nats::NatsClients::default();
        StandardConnectors {
            http,
            #[cfg(feature = "nats")]
            channels: channel::Channels::new(&Settings::default(), nats.clone()),
            #[cfg(not(feature = "nats"))]
            channels: channel::Channels::new(&Settings::default()),
            #[cfg(feature = "nats")]
            nats,
        }
    }

    /// The same connectors with the channel backend `sluice.yaml` chose (see [`Settings`]).
    pub fn with_settings(mut self, settings: &Settings) -> Self {
        #[cfg(feature = "nats")]
        {
            self.channels = channel::Channels::new(settings, self.nats.clone());
        }
        #[cfg(not(feature = "nats"))]
        {
            self.channels = channel::Channels::new(settings);
        }
        self
    }
}

/// One kind of trigger or sink known to this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// `trigger` or `sink`.
    pub role: &'static str,
    /// Its YAML key.
    pub key: &'static str,
    /// The cargo feature it needs, if it needs one.
    pub feature: Option<&'static str>,
    /// Whether this build has it.
    pub included: bool,
}

/// What the engine is told about a trigger of type `C`.
fn trigger_info<C: TriggerComponent>(config: &C, cx: &BuildContext<'_>) -> TriggerInfo {
    let restart_key = match TriggerKey::plain(cx.flow) {
        Some((kind, node)) if kind == C::KEY => TriggerKey::new(C::KEY, config.restart_key(node)),
        _ => TriggerKey::unknown(),
    };
    TriggerInfo {
        kind: C::KEY,
        description: config.describe(),
        claim: config.claim(),
        url: config.url().map(str::to_owned),
        connects: config.connects(),
        watched_folder: config.watched_folder(),
        restart_key,
        authenticates: config.authenticates(),
        input: config.input(),
    }
}

/// What the engine is told about a sink of type `C`.
fn sink_info<C: SinkComponent>(config: &C) -> SinkInfo {
    SinkInfo {
        kind: C::KEY,
        folder: config.folder().cloned(),
    }
}

/// Derives the dispatch of [`StandardConnectors`] and [`kinds`] from one list: each entry is
/// a `TriggerConfig`/`SinkConfig` variant with its config type, and, for a connector that is
/// a cargo feature, `if "<feature>"`. A variant missing from the list does not compile; a
/// flow using one whose feature is off gets a positioned load error naming the feature.
macro_rules! components {
    (
        triggers { $( $tv:ident($tt:ty) $( if $tf:literal )? ),* $(,)? }
        sinks { $( $sv:ident($st:ty) $( if $sf:literal )? ),* $(,)? }
    ) => {
        impl Connectors for StandardConnectors {
            fn trigger(
                &self,
                config: &Spanned<TriggerConfig>,
                cx: &BuildContext<'_>,
            ) -> Result<Box<dyn Trigger>, Diagnostic> {
                match &config.value {
                    $(
                        $( #[cfg(feature = $tf)] )?
                        TriggerConfig::$tv(c) => <$tt as TriggerComponent>::build(c, self, cx),
                        $(
                            #[cfg(not(feature = $tf))]
                            TriggerConfig::$tv(_) => Err(component::left_out(config, cx, "trigger", $tf)),
                        )?
                    )*
                }
            }

            fn trigger_info(
                &self,
                config: &Spanned<TriggerConfig>,
                cx: &BuildContext<'_>,
            ) -> TriggerInfo {
                match &config.value {
                    $(
                        $( #[cfg(feature = $tf)] )?
                        TriggerConfig::$tv(c) => trigger_info::<$tt>(c, cx),
                        $(
                            // Never asked in practice: such a flow does not compile.
                            #[cfg(not(feature = $tf))]
                            TriggerConfig::$tv(_) => TriggerInfo {
                                kind: $tf,
                                description: format!("{} (not in this build)", $tf),
                                ..TriggerInfo::default()
                            },
                        )?
                    )*
                }
            }

            fn sink(
                &self,
                name: &str,
                config: &Spanned<SinkConfig>,
                cx: &BuildContext<'_>,
            ) -> Result<Arc<dyn Sink>, Diagnostic> {
                match &config.value {
                    $(
                        $( #[cfg(feature = $sf)] )?
                        SinkConfig::$sv(c) => <$st as SinkComponent>::build(c, name, self, cx),
                        $(
                            #[cfg(not(feature = $sf))]
                            SinkConfig::$sv(_) => Err(component::left_out(config, cx, "sink", $sf)),
                        )?
                    )*
                }
            }

            fn sink_info(&self, config: &Spanned<SinkConfig>) -> SinkInfo {
                match &config.value {
                    $(
                        $( #[cfg(feature = $sf)] )?
                        SinkConfig::$sv(c) => sink_info::<$st>(c),
                        $(
                            #[cfg(not(feature = $sf))]
                            SinkConfig::$sv(_) => SinkInfo { kind: $sf, folder: None },
                        )?
                    )*
                }
            }
        }

        /// Every trigger and sink kind, in the order registered, and whether this build has it.
        // Pushed one by one: each entry may be cfg'd out, which `vec![]` cannot express.
        #[allow(clippy::vec_init_then_push)]
        pub fn kinds() -> Vec<Kind> {
            let mut kinds = Vec::new();
            $(
                $( #[cfg(feature = $tf)] )?
                kinds.push(Kind {
                    role: "trigger",
                    key: <$tt as TriggerComponent>::KEY,
                    feature: components!(@feature $($tf)?),
                    included: true,
                });
                $(
                    #[cfg(not(feature = $tf))]
                    kinds.push(Kind { role: "trigger", key: $tf, feature: Some($tf), included: false });
                )?
            )*
            $(
                $( #[cfg(feature = $sf)] )?
                kinds.push(Kind {
                    role: "sink",
                    key: <$st as SinkComponent>::KEY,
                    feature: components!(@feature $($sf)?),
                    included: true,
                });
                $(
                    #[cfg(not(feature = $sf))]
                    kinds.push(Kind { role: "sink", key: $sf, feature: Some($sf), included: false });
                )?
            )*
            kinds
        }
    };
    (@feature) => { None };
    (@feature $f:literal) => { Some($f) };
}

// The one list. Adding a connector adds its line here (and its module above).
components! {
    triggers {
        File(model::FileTriggerConfig),
        Http(model::HttpTriggerConfig),
        Schedule(model::ScheduleTriggerConfig),
        Channel(model::ChannelConfig),
        Nats(model::NatsTriggerConfig) if "nats",
        Amqp(model::AmqpTriggerConfig) if "amqp",
        Mqtt(model::MqttTriggerConfig) if "mqtt",
        Redis(model::RedisTriggerConfig) if "redis",
        Postgres(model::PostgresTriggerConfig) if "postgres",
        Mysql(model::MysqlTriggerConfig) if "mysql",
        Kafka(model::KafkaTriggerConfig) if "kafka",
        Sftp(model::SftpTriggerConfig) if "sftp",
    }
    sinks {
        File(model::FileSinkConfig),
        Stdout(model::StdoutSinkConfig),
        Http(model::HttpSinkConfig),
        Channel(model::ChannelConfig),
        Nats(model::NatsSinkConfig) if "nats",
        Amqp(model::AmqpSinkConfig) if "amqp",
        Mqtt(model::MqttSinkConfig) if "mqtt",
        Redis(model::RedisSinkConfig) if "redis",
        Postgres(model::PostgresSinkConfig) if "postgres",
        Mysql(model::MysqlSinkConfig) if "mysql",
        Kafka(model::KafkaSinkConfig) if "kafka",
        Sftp(model::SftpSinkConfig) if "sftp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(source: &str) -> sluice_flow::LoadedFlow {
        sluice_flow::parse_flow(std::path::Path::new("flows/t.yaml"), source.to_owned())
            .unwrap_or_else(|d| panic!("{d}"))
    }

    fn info(source: &str) -> TriggerInfo {
        let loaded = flow(source);
        StandardConnectors::default()
            .trigger_info(&loaded.file.trigger, &BuildContext { flow: &loaded })
    }

    const SINKS: &str = "sinks:\n  out: { stdout: {} }\n";

    #[test]
    fn a_file_trigger_claims_and_watches_its_folder() {
        let info = info(&format!("trigger:\n  file: {{ path: inbox/a }}\n{SINKS}"));
        let folder = sluice_flow::paths::normalize(std::path::Path::new("inbox/a"));
        assert_eq!(info.kind, "file");
        assert_eq!(info.description, "file inbox/a");
        assert_eq!(info.claim, Some(format!("file {}", folder.display())));
        assert_eq!(info.watched_folder, Some(folder));
        assert!(!info.connects && info.url.is_none());
    }

    #[test]
    fn an_http_trigger_claims_its_method_and_path_shape() {
        let info = info(&format!(
            "trigger:\n  http: {{ path: \"/orders/{{id}}\", method: PUT }}\n{SINKS}"
        ));
        assert_eq!(info.description, "http PUT /orders/{id}");
        let claim = info.claim.expect("an http trigger claims its route");
        assert!(claim.starts_with("http PUT /orders/"), "{claim}");
    }

    #[test]
    fn a_channel_connects_without_a_url_and_claims_nothing() {
        let info = info(&format!("trigger:\n  channel: {{ name: c }}\n{SINKS}"));
        assert_eq!(info.description, "channel c");
        assert!(info.connects && info.url.is_none() && info.claim.is_none());
    }

    #[cfg(feature = "nats")]
    #[test]
    fn a_broker_trigger_has_its_url_and_shares_its_source() {
        let info = info(&format!(
            "trigger:\n  nats: {{ url: \"nats://u:p@127.0.0.1:4222\", subject: s }}\n{SINKS}"
        ));
        assert_eq!(info.url.as_deref(), Some("nats://u:p@127.0.0.1:4222"));
        assert!(info.connects && info.claim.is_none());
    }

    #[test]
    fn the_restart_key_ignores_positions_but_not_values() {
        let a = info(&format!("trigger:\n  file: {{ path: inbox/a }}\n{SINKS}"));
        let moved = info(&format!(
            "# moved\ndescription: x\ntrigger:\n  file:\n    path: \"inbox/a\"\n{SINKS}"
        ));
        let changed = info(&format!("trigger:\n  file: {{ path: inbox/b }}\n{SINKS}"));
        assert!(a.restart_key.same_as(&moved.restart_key));
        assert!(!a.restart_key.same_as(&changed.restart_key));
    }

    #[test]
    fn an_error_shows_a_url_without_its_credentials() {
        assert_eq!(
            shown_url("amqp://guest:secret@127.0.0.1:5672/%2f?heartbeat=5"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(
            shown_url("postgres://app@db/orders?password=secret"),
            "postgres://db/orders"
        );
        // A key=value connection string is no URL; its password would show.
        let text = shown_url("host=db user=app password=secret");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_file_sink_reports_its_folder() {
        let loaded =
            flow("trigger:\n  channel: { name: c }\nsinks:\n  out: { file: { path: outbox } }\n");
        let info = StandardConnectors::default().sink_info(&loaded.file.sinks["out"]);
        assert_eq!(info.kind, "file");
        assert_eq!(
            info.folder.map(|f| f.value.to_string()).as_deref(),
            Some("outbox")
        );
    }

    #[cfg(not(feature = "nats"))]
    #[test]
    fn a_connector_left_out_of_the_build_is_a_positioned_load_error() {
        let loaded = flow(&format!(
            "trigger:\n  nats: {{ subject: s }}\nsinks:\n  out: {{ nats: {{ subject: t }} }}\n"
        ));
        let connectors = StandardConnectors::default();
        let cx = BuildContext { flow: &loaded };
        let trigger = connectors.trigger(&loaded.file.trigger, &cx).err();
        let trigger = trigger.expect("a nats trigger does not build without the feature");
        let text = trigger.to_string();
        assert!(text.contains("flows/t.yaml:2:"), "{text}");
        assert!(
            text.contains("no `nats` trigger") && text.contains("cargo feature `nats`"),
            "{text}"
        );
        let sink = connectors.sink("out", &loaded.file.sinks["out"], &cx).err();
        let text = sink
            .expect("a nats sink does not build without the feature")
            .to_string();
        assert!(
            text.contains("flows/t.yaml:4:") && text.contains("no `nats` sink"),
            "{text}"
        );
        assert!(kinds().iter().any(|k| k.key == "nats" && !k.included));
    }

    #[test]
    fn every_key_is_the_name_the_flow_format_uses() {
        let unknown = serde_saphyr::from_str::<TriggerConfig>("no_such_kind: 1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(unknown.contains("unknown variant"), "{unknown}");
        let kinds = kinds();
        assert_eq!(kinds.iter().filter(|k| k.role == "trigger").count(), 12);
        assert_eq!(kinds.iter().filter(|k| k.role == "sink").count(), 12);
        for kind in kinds {
            // A key the enum does not know fails as an unknown variant; a known one fails
            // only on its (here missing) fields.
            let yaml = format!("{}: 1", kind.key);
            let error = match kind.role {
                "trigger" => serde_saphyr::from_str::<TriggerConfig>(&yaml).err(),
                _ => serde_saphyr::from_str::<SinkConfig>(&yaml).err(),
            };
            let error = error.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                !error.contains("unknown variant"),
                "{} `{}`: {error}",
                kind.role,
                kind.key
            );
        }
    }
}
