//! The file connector: a trigger that claims stable files from a folder, and a sink that
//! writes one file per message atomically.

mod claim;
mod decode;
mod finish;
mod sink;
mod stability;
mod temp;
mod trigger;

pub use sink::{FileSink, serialize};
pub use trigger::FileTrigger;

/// Decodes input bytes the way the file trigger would: one payload (with its line or row
/// number for `ndjson` and `csv`) per message. Used by `sluice exec`, which refuses an input
/// with a malformed line or row (the trigger would fail that record alone).
pub fn decode_input(
    bytes: &[u8],
    format: sluice_flow::FileFormat,
    csv: &sluice_flow::CsvOptions,
) -> Result<Vec<(serde_json::Value, Option<usize>)>, String> {
    decode::decode(bytes, format, csv)?
        .into_iter()
        .map(|r| match r.content {
            Ok(payload) => Ok((payload, r.line)),
            Err(malformed) => Err(malformed.reason),
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
