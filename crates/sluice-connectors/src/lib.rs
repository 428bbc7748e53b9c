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

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod channel;
pub mod codec;
mod component;
pub mod file;
pub mod http;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis_streams;
pub mod schedule;
pub mod stdout;

pub use component::{SinkComponent, TriggerComponent};

use component::left_out;
use sluice_engine::{
    BuildContext, Connectors, Sink, SinkInfo, Trigger, TriggerInfo, TriggerKey,
};
use sluice_flow::{
    AmqpSinkConfig, AmqpTriggerConfig, ChannelConfig, Diagnostic, FileSinkConfig,
    FileTriggerConfig, HttpSinkConfig, HttpTriggerConfig, MqttSinkConfig, MqttTriggerConfig,
    NatsSinkConfig, NatsTriggerConfig, PostgresSinkConfig, PostgresTriggerConfig,
    RedisSinkConfig, RedisTriggerConfig, ScheduleTriggerConfig, Settings, SinkConfig, Spanned,
    StdoutSinkConfig, TriggerConfig,
};
use std::sync::Arc;

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
                            TriggerConfig::$tv(_) => Err(left_out(config, cx, "trigger", $tf)),
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
                            SinkConfig::$sv(_) => Err(left_out(config, cx, "sink", $sf)),
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
        File(FileTriggerConfig),
        Http(HttpTriggerConfig),
        Schedule(ScheduleTriggerConfig),
        Channel(ChannelConfig),
        Nats(NatsTriggerConfig) if "nats",
        Amqp(AmqpTriggerConfig) if "amqp",
        Mqtt(MqttTriggerConfig) if "mqtt",
        Redis(RedisTriggerConfig) if "redis",
        Postgres(PostgresTriggerConfig) if "postgres",
    }
    sinks {
        File(FileSinkConfig),
        Stdout(StdoutSinkConfig),
        Http(HttpSinkConfig),
        Channel(ChannelConfig),
        Nats(NatsSinkConfig) if "nats",
        Amqp(AmqpSinkConfig) if "amqp",
        Mqtt(MqttSinkConfig) if "mqtt",
        Redis(RedisSinkConfig) if "redis",
        Postgres(PostgresSinkConfig) if "postgres",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_the_name_the_flow_format_uses() {
        let kinds = kinds();
        assert_eq!(kinds.iter().filter(|k| k.role == "trigger").count(), 9);
        assert_eq!(kinds.iter().filter(|k| k.role == "sink").count(), 9);
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
