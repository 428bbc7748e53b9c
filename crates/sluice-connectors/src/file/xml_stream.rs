//! The records of a large XML file, read from the file one at a time (`xml.record`).
//!
//! Two passes over the claimed file: the first checks the whole document and counts its
//! records without building them, the second builds and sends them one by one. So a
//! malformed document goes to `.error/` before any of its records is sent (as a malformed
//! `json` file does), the file's claim knows how many acknowledgements it waits for, and
//! memory holds one record and the flow's bounded queue, whatever the file's size. The price
//! is reading the file twice, which the page cache makes a second parse, not a second read
//! from disk.

use super::decode::{DecodeError, Malformed, Record, XmlReading};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Read ahead per pass.
const BUFFER: usize = 64 << 10;

/// The messages of a claimed file: decoded in memory, or streamed from an XML file.
pub(super) enum Records {
    /// Every record, decoded.
    Decoded(Vec<Record>),
    /// `count` records at `xml.record`, read when they are sent.
    Xml {
        path: PathBuf,
        count: usize,
        xml: Arc<XmlReading>,
    },
}

impl Records {
    /// How many messages the file gives.
    pub(super) fn len(&self) -> usize {
        match self {
            Records::Decoded(records) => records.len(),
            Records::Xml { count, .. } => *count,
        }
    }

    /// Whether the file gives no message at all.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the file's records are messages of their own (the sidecar then lists the
    /// failed ones by line).
    pub(super) fn per_record(&self, decoded_per_record: bool) -> bool {
        match self {
            Records::Decoded(_) => decoded_per_record,
            Records::Xml { .. } => true,
        }
    }

    /// The records in order; exactly [`Records::len`] of them.
    pub(super) fn into_records(self) -> Box<dyn Iterator<Item = Record> + Send> {
        match self {
            Records::Decoded(records) => Box::new(records.into_iter()),
            Records::Xml { path, count, xml } => Box::new(stream(&path, count, &xml)),
        }
    }
}

/// The first pass: checks the document and counts the records at `xml.record`.
pub(super) fn count(file: &File, xml: &XmlReading) -> Result<usize, DecodeError> {
    let Some(record) = &xml.record else {
        return Ok(1);
    };
    let reader = BufReader::with_capacity(BUFFER, file);
    Ok(sluice_xml::count_records(
        reader,
        record.clone(),
        xml.options.clone(),
    )?)
}

/// The second pass. The file sits in `.inflight/`, claimed, so it is the document the first
/// pass counted; should it differ all the same (edited in place, or unreadable now), the
/// records missing are failed with the reason rather than waited for, so that the file is
/// still finished.
fn stream(
    path: &Path,
    count: usize,
    xml: &XmlReading,
) -> impl Iterator<Item = Record> + Send + use<> {
    let opened = File::open(path);
    let reason = |why: String| {
        move || Record {
            content: Err(Malformed {
                raw: Vec::new(),
                reason: why.clone(),
            }),
            line: None,
            source_line: None,
        }
    };
    let (records, missing): (Box<dyn Iterator<Item = Record> + Send>, _) =
        match (opened, &xml.record) {
            (Ok(file), Some(record)) => {
                let reader = BufReader::with_capacity(BUFFER, file);
                let records = sluice_xml::Records::new(reader, record.clone(), xml.options.clone())
                    .map_while(Result::ok)
                    .map(|record| Record {
                        content: Ok(record.value),
                        line: Some(record.line),
                        source_line: None,
                    });
                (
                    Box::new(records),
                    reason("the file changed while its records were read".to_owned()),
                )
            }
            (Ok(_), None) => (
                Box::new(std::iter::empty()),
                reason("no record path".to_owned()),
            ),
            (Err(e), _) => (
                Box::new(std::iter::empty()),
                reason(format!("cannot read the claimed file again: {e}")),
            ),
        };
    records.chain(std::iter::repeat_with(missing)).take(count)
}
