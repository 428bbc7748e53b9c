//! The `<name>.error.json` written next to a file moved to `.error/` or `.rejected/`: the
//! first failure's [`ErrorEnvelope`] (the same fields as a dead-letter entry's `error`, so
//! `message_id` and `flow_version` are always there), the file's name and, for `ndjson` and
//! `csv`, the counts and every failed record with its line.

use serde::Serialize;
use sluice_engine::{ErrorEnvelope, ErrorKind};

/// How one failed record ended.
pub(crate) struct FailedRecord {
    pub(crate) line: Option<usize>,
    pub(crate) source_line: Option<usize>,
    pub(crate) envelope: ErrorEnvelope,
    pub(crate) kind: ErrorKind,
    pub(crate) dead_lettered: bool,
}

/// At most this many failed records are listed in a sidecar's `failed_records` (the first
/// ones by line); `records.failed` always has the full count.
const MAX_LISTED: usize = 10_000;

/// A sidecar, as written.
#[derive(Serialize)]
pub(super) struct Sidecar<'a> {
    /// The first failure, or why the file was not read.
    #[serde(flatten)]
    error: &'a ErrorEnvelope,
    /// The file's name in the watched folder.
    file: &'a str,
    /// Whether the dead letter took the failed message (a file of one message).
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_lettered: Option<bool>,
    /// The counts (a file of records).
    #[serde(skip_serializing_if = "Option::is_none")]
    records: Option<Counts>,
    /// Every failed record, up to [`MAX_LISTED`] (a file of records).
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_records: Option<Vec<Listed<'a>>>,
}

#[derive(Serialize)]
struct Counts {
    total: usize,
    succeeded: usize,
    failed: usize,
    dead_lettered: usize,
}

/// One failed record of a file of records.
#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    error: &'a ErrorEnvelope,
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_line: Option<usize>,
    dead_lettered: bool,
}

impl<'a> Sidecar<'a> {
    /// The sidecar of a file that was not read at all (too large, unreadable as a whole).
    pub(super) fn unread(file: &'a str, error: &'a ErrorEnvelope) -> Self {
        Sidecar {
            error,
            file,
            dead_lettered: Some(false),
            records: None,
            failed_records: None,
        }
    }

    /// The sidecar of a file whose messages failed (`failed` is not empty); `multi` for a
    /// file of records (`ndjson`, `csv`), which lists them.
    pub(super) fn failed(
        file: &'a str,
        failed: &'a [FailedRecord],
        total: usize,
        multi: bool,
    ) -> Option<Self> {
        let first = failed.first()?;
        if !multi {
            return Some(Sidecar {
                error: &first.envelope,
                file,
                dead_lettered: Some(first.dead_lettered),
                records: None,
                failed_records: None,
            });
        }
        let dead_lettered = failed.iter().filter(|f| f.dead_lettered).count();
        let listed = failed
            .iter()
            .take(MAX_LISTED)
            .map(|f| Listed {
                error: &f.envelope,
                line: f.line,
                source_line: f.source_line,
                dead_lettered: f.dead_lettered,
            })
            .collect();
        Some(Sidecar {
            error: &first.envelope,
            file,
            dead_lettered: None,
            records: Some(Counts {
                total,
                succeeded: total.saturating_sub(failed.len()),
                failed: failed.len(),
                dead_lettered,
            }),
            failed_records: Some(listed),
        })
    }

    /// The sidecar as the JSON document written next to the file. Its fields are strings,
    /// numbers and lists of them, so serializing cannot fail; were it to, the sidecar still
    /// names the file, the message and the first error instead of being `null`.
    pub(super) fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| {
            serde_json::json!({
                "file": self.file,
                "message_id": self.error.message_id,
                "message": self.error.message,
                "sidecar_error": format!("the rest of this sidecar could not be written: {e}"),
            })
        })
    }
}
