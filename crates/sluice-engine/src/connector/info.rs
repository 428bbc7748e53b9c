//! What the engine knows about a trigger or sink besides running it: its kind, how it shows
//! in `/api/flows`, the resource it holds exclusively, and when a reload must restart it.
//! Each connector states these once, beside its config type (sluice-connectors'
//! `TriggerComponent` and `SinkComponent`); the engine only reads them here.

use sluice_flow::{CsvOptions, FileFormat, LoadedFlow, Spanned, Text};
use std::path::PathBuf;

/// A trigger as the registry sees it. Built once per compiled version.
///
/// Not `Debug`: `url` may hold a password.
#[derive(Clone, Default)]
pub struct TriggerInfo {
    /// The YAML key of its kind (`file`, `http`, `nats`, …).
    pub kind: &'static str,
    /// A short description for logs and `/api/flows`, e.g. `http POST /orders`.
    pub description: String,
    /// The exclusive resource it claims (`http POST /orders`, `file /abs/inbox`); two flows
    /// claiming the same one is a load error naming both files. Broker sources are shared on
    /// purpose (flows using one durable, queue or group split the work), so they claim none.
    pub claim: Option<String>,
    /// The broker address as written (it may carry credentials: only ever shown through
    /// [`without_credentials`](crate::registry::without_credentials)).
    pub url: Option<String>,
    /// Whether its source is a connection that can be down (a broker, or a channel that may
    /// live on NATS): such a trigger shows `connecting`, not `unhealthy`, until it consumes.
    pub connects: bool,
    /// The folder it scans, if it scans one (no sink may write into it).
    pub watched_folder: Option<PathBuf>,
    /// What decides whether a reload restarts it.
    pub restart_key: TriggerKey,
    /// Whether it authenticates its own callers (an `http` trigger with `auth:`): the admin
    /// server then asks for that same authentication before injecting a message.
    pub authenticates: bool,
    /// How an input given to `sluice exec` is read into messages, as this trigger would.
    pub input: InputFormat,
}

/// How a trigger reads a body into messages; `sluice exec` reads its input the same way.
#[derive(Clone, Debug, Default)]
pub struct InputFormat {
    /// One document, or a message per line or row.
    pub format: FileFormat,
    /// The CSV options, for `format: csv`.
    pub csv: CsvOptions,
    /// The XML options, for `format: xml`.
    pub xml: sluice_flow::XmlReadConfig,
}

/// A sink as the compiler sees it.
#[derive(Clone, Debug, Default)]
pub struct SinkInfo {
    /// The YAML key of its kind.
    pub kind: &'static str,
    /// The folder it writes into, if it writes files (checked against the trigger's folder,
    /// and listed by the admin API for a dead letter).
    pub folder: Option<Spanned<Text>>,
}

/// What a flow's `trigger:` says, without where it says it; two equal keys keep the
/// running trigger across a reload.
///
/// The parsed `TriggerConfig` carries source positions in every `Spanned` field, so comparing
/// two of them would restart a trigger when only the lines above it moved. Instead the
/// `trigger:` node is read again from the same text as plain YAML data: positions, comments,
/// quoting and key order are gone, and every kind of trigger is compared the same way,
/// including fields added later. The connector then keeps what needs a restart (by default
/// everything). `${env:…}` references compare as written; the environment of a running
/// process does not change, so equal text means an equal configuration. An unknown key
/// (the text cannot be read as plain data) is never equal to anything, which only restarts
/// the trigger.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerKey(Option<serde_json::Value>);

impl TriggerKey {
    /// The `trigger:` node of a loaded flow as plain data: its kind and that kind's map.
    pub fn plain(loaded: &LoadedFlow) -> Option<(String, serde_json::Value)> {
        let mut doc = serde_saphyr::from_str::<serde_json::Value>(&loaded.source).ok()?;
        let trigger = doc.get_mut("trigger")?.as_object_mut()?;
        if trigger.len() != 1 {
            return None;
        }
        let (kind, node) = trigger.iter_mut().next()?;
        Some((kind.clone(), node.take()))
    }

    /// The key of a trigger of `kind` whose restart-relevant configuration is `node`.
    pub fn new(kind: &str, node: serde_json::Value) -> TriggerKey {
        TriggerKey(Some(serde_json::json!({ kind: node })))
    }

    /// A key equal to nothing: the next reload restarts the trigger.
    pub fn unknown() -> TriggerKey {
        TriggerKey(None)
    }

    /// Whether two versions configure their trigger identically.
    pub fn same_as(&self, other: &TriggerKey) -> bool {
        self.0.is_some() && self.0 == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn key(source: &str) -> TriggerKey {
        let loaded = sluice_flow::parse_flow(Path::new("flows/t.yaml"), source.to_owned())
            .expect("the test flow parses");
        match TriggerKey::plain(&loaded) {
            Some((kind, node)) => TriggerKey::new(&kind, node),
            None => TriggerKey::unknown(),
        }
    }

    const SINKS: &str = "sinks:\n  out:\n    stdout: {}\n";

    #[test]
    fn moved_lines_and_comments_do_not_change_the_key() {
        let a = key(&format!(
            "trigger:\n  nats: {{ subject: orders, stream: ORDERS, durable: d }}\n{SINKS}"
        ));
        let b = key(&format!(
            "description: |\n  two\n  lines\n# a comment\ntrigger:\n  nats:\n    durable: d   # same\n    subject: \"orders\"\n    stream: ORDERS\n{SINKS}"
        ));
        assert!(a.same_as(&b));
    }

    #[test]
    fn a_changed_value_changes_the_key() {
        let a = key(&format!("trigger:\n  channel: {{ name: a }}\n{SINKS}"));
        let b = key(&format!("trigger:\n  channel: {{ name: b }}\n{SINKS}"));
        assert!(!a.same_as(&b));
    }

    #[test]
    fn another_kind_with_the_same_map_changes_the_key() {
        let a = key(&format!("trigger:\n  channel: {{ name: a }}\n{SINKS}"));
        assert!(!a.same_as(&TriggerKey::new("other", serde_json::json!({"name": "a"}))));
        assert!(!TriggerKey::unknown().same_as(&TriggerKey::unknown()));
    }
}
