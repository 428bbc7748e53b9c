//! The file connector: a trigger that claims stable files from a folder, and a sink that
//! writes one file per message atomically.

pub(crate) mod claim;
pub(crate) mod decode;
mod drain;
pub(crate) mod emit;
pub(crate) mod finish;
pub(crate) mod ids;
mod mover;
mod scan;
pub(crate) mod sidecar;
pub(crate) mod sink;
pub(crate) mod stability;
pub(crate) mod temp;
pub(crate) mod trigger;
mod xml_stream;

pub use decode::DecodeError;
pub use sink::{FileSink, serialize};
pub use trigger::FileTrigger;

/// Decodes input bytes the way the file trigger would: one payload (with its line or row
/// number for `ndjson` and `csv`) per message. Used by `sluice exec`, which refuses an input
/// with a malformed line or row (the trigger would fail that record alone).
pub fn decode_input(
    bytes: &[u8],
    input: &sluice_engine::InputFormat,
) -> Result<Vec<(serde_json::Value, Option<usize>)>, DecodeError> {
    let xml = decode::XmlReading::new(&input.xml).map_err(DecodeError::Record)?;
    decode::decode_file(bytes, input.format, &input.csv, &xml)?
        .into_iter()
        .map(|r| match r.content {
            Ok(payload) => Ok((payload, r.line)),
            Err(malformed) => Err(DecodeError::Record(malformed.reason)),
        })
        .collect()
}

/// Names the file trigger never takes: hidden files and the usual temporary names.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('~')
        || name.ends_with('~')
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with(".swp")
}

impl crate::TriggerComponent for sluice_flow::FileTriggerConfig {
    const KEY: &'static str = "file";

    fn build(
        &self,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, sluice_flow::Diagnostic> {
        Ok(Box::new(FileTrigger::new(self, cx)?))
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.value)
    }

    /// The folder: two flows taking files from one folder would steal them from each other.
    fn claim(&self) -> Option<String> {
        self.watched_folder()
            .map(|folder| format!("file {}", folder.display()))
    }

    fn watched_folder(&self) -> Option<std::path::PathBuf> {
        Some(sluice_flow::paths::normalize(std::path::Path::new(
            self.path.value.as_str(),
        )))
    }

    /// As its files: `format` and the CSV options.
    fn input(&self) -> sluice_engine::InputFormat {
        sluice_engine::InputFormat {
            format: self.format,
            csv: self.csv.clone(),
            xml: self.xml.clone(),
        }
    }
}

impl crate::SinkComponent for sluice_flow::FileSinkConfig {
    const KEY: &'static str = "file";

    fn build(
        &self,
        name: &str,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(FileSink::new(name, self, cx)?))
    }

    fn folder(&self) -> Option<&sluice_flow::Spanned<sluice_flow::Text>> {
        Some(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::is_ignored_name;

    #[test]
    fn temporary_names_are_ignored() {
        for name in [".hidden", "a.tmp", "a.part", "a.swp", "~lock", "backup~"] {
            assert!(is_ignored_name(name), "{name}");
        }
        assert!(!is_ignored_name("order.json"));
    }
}
