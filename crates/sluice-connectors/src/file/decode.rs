//! Turning file content into message payloads, per `format:`.
//!
//! A `json`, `text` or `bytes` file is one message, and content that cannot be read fails the
//! whole file. An `ndjson` line or a `csv` row is a message of its own, so one malformed line
//! or row is a failure of that record only: it comes back as [`Malformed`], with its raw bytes,
//! and the other records are processed.

use base64::Engine as _;
use serde_json::Value;
use sluice_flow::{CsvOptions, FileFormat, XmlReadConfig};

/// The UTF-8 byte order mark that some editors and spreadsheet exports put first.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One message from a file.
#[derive(Debug)]
pub struct Record {
    /// The payload, or why this record could not be read.
    pub content: Result<Value, Malformed>,
    /// 1-based line (ndjson) or data row (csv): the `file.line` metadata.
    pub line: Option<usize>,
    /// csv only: the 1-based line of the file on which the row starts (a quoted field may
    /// span lines, and the header takes a line): the `file.source_line` metadata.
    pub source_line: Option<usize>,
}

/// A line or row that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The record exactly as it is in the file (without its line ending).
    pub raw: Vec<u8>,
    /// What is wrong and where, for humans.
    pub reason: String,
}

/// Why a file's content cannot be read at all (or, for `sluice exec`, why one of its records
/// cannot). The text goes into the `.error.json` sidecar of a rejected file and into
/// `sluice exec`'s refusal, so it says what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A `text` or `json` file that is not UTF-8.
    #[error("the file is not UTF-8 text (binary content?): invalid byte at offset {offset}")]
    NotUtf8 {
        /// The byte offset of the first invalid byte.
        offset: usize,
    },
    /// A `json` file that is not JSON.
    #[error("{} at line {} column {}: {}", json_what(.0), .0.line(), .0.column(), json_detail(.0))]
    Json(#[source] serde_json::Error),
    /// A `json` file holding a number beyond a 64-bit float (`1e400`).
    #[error("{0} is beyond a 64-bit float's range")]
    NumberOutOfRange(String),
    /// A `csv.delimiter` of more than one byte.
    #[error("the csv delimiter must be one ASCII character")]
    CsvDelimiter,
    /// The csv reader failed (reading from memory, it has nothing left to fail on).
    #[error("cannot read the csv content: {0}")]
    Csv(#[source] csv::Error),
    /// A csv header that is not UTF-8: without it, no row has field names.
    #[error(
        "the csv header (line {line}) is not UTF-8 text (field {field}); no row can be read without it"
    )]
    CsvHeader {
        /// The 1-based line of the header.
        line: usize,
        /// The 1-based field that is not UTF-8.
        field: usize,
    },
    /// An `xml` file that is not a document sluice reads: malformed (with its line and
    /// column), a DTD, nested too deep.
    #[error("{0}")]
    Xml(#[from] sluice_xml::XmlError),
    /// One malformed ndjson line or csv row (its `Malformed::reason`): the trigger fails that
    /// record alone, `sluice exec` refuses the input.
    #[error("{0}")]
    Record(String),
}

/// How a trigger reads `format: xml`: the convention's options and the record path, checked.
#[derive(Debug, Clone, Default)]
pub struct XmlReading {
    /// The convention's options.
    pub options: sluice_xml::ReadOptions,
    /// The records' path; none: the document is one message.
    pub record: Option<sluice_xml::RecordPath>,
}

impl XmlReading {
    /// Checks a file trigger's `xml:` (the local or a remote one) against its `format`.
    pub(crate) fn checked(
        config: &XmlReadConfig,
        format: FileFormat,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Self, sluice_flow::Diagnostic> {
        let Some(record) = &config.record else {
            return Ok(XmlReading::new(config).unwrap_or_default());
        };
        if format != FileFormat::Xml {
            return Err(cx
                .diagnostic(record, "`xml.record` splits XML documents")
                .with_help("add `format: xml`, or remove `xml`"));
        }
        XmlReading::new(config).map_err(|reason| {
            cx.diagnostic(record, reason)
                .with_help("the path of the record elements from the root, e.g. `/Orders/Order`")
        })
    }

    /// Reads `xml:`; the error is about `xml.record`.
    pub fn new(config: &XmlReadConfig) -> Result<Self, String> {
        let record = match &config.record {
            Some(path) => Some(sluice_xml::RecordPath::parse(path.value.as_str())?),
            None => None,
        };
        Ok(XmlReading {
            options: sluice_xml::ReadOptions {
                arrays: config.arrays.clone(),
                ..sluice_xml::ReadOptions::default()
            },
            record,
        })
    }
}

/// Decodes a whole file. An error means no record can be read at all (a `json` file that is
/// not JSON, a csv header that is not UTF-8); it says why, with a position where there is one.
pub fn decode_file(
    bytes: &[u8],
    format: FileFormat,
    csv: &CsvOptions,
    xml: &XmlReading,
) -> Result<Vec<Record>, DecodeError> {
    let single = |payload| {
        Ok(vec![Record {
            content: Ok(payload),
            line: None,
            source_line: None,
        }])
    };
    match format {
        FileFormat::Bytes => single(Value::String(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        )),
        FileFormat::Text => single(Value::String(utf8(strip_bom(bytes))?.to_owned())),
        FileFormat::Json => {
            let text = utf8(strip_bom(bytes))?;
            match serde_json::from_str(text) {
                Ok(value) => match sluice_engine::check_numbers(&value) {
                    Ok(()) => single(value),
                    Err(number) => Err(DecodeError::NumberOutOfRange(number)),
                },
                Err(e) => Err(DecodeError::Json(e)),
            }
        }
        FileFormat::Ndjson => Ok(decode_ndjson(strip_bom(bytes))),
        FileFormat::Csv => decode_csv(strip_bom(bytes), csv),
        FileFormat::Xml => match &xml.record {
            None => single(sluice_xml::to_json(strip_bom(bytes), &xml.options)?),
            Some(path) => {
                sluice_xml::Records::new(strip_bom(bytes), path.clone(), xml.options.clone())
                    .map(|record| {
                        let record = record?;
                        Ok(Record {
                            content: Ok(record.value),
                            line: Some(record.line),
                            source_line: None,
                        })
                    })
                    .collect()
            }
        },
    }
}

/// A UTF-8 byte order mark says only "this is UTF-8"; it is not content.
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8 {
        offset: e.valid_up_to(),
    })
}

fn json_what(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => {
            "malformed JSON: the input ends in the middle of a value"
        }
        _ => "malformed JSON",
    }
}

/// serde_json's message without its own " at line L column C" suffix (we say where).
fn json_detail(e: &serde_json::Error) -> String {
    let detail = e.to_string();
    detail
        .split(" at line ")
        .next()
        .unwrap_or(&detail)
        .to_owned()
}

/// One record per non-empty line; a line that is not UTF-8 or not JSON is malformed.
fn decode_ndjson(bytes: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        let number = i + 1;
        let content = match std::str::from_utf8(line) {
            Err(e) => Err(format!(
                "line {number}: not UTF-8 text: invalid byte at column {}",
                e.valid_up_to() + 1
            )),
            Ok(text) => serde_json::from_str(text)
                .map_err(|e| {
                    format!(
                        "line {number} column {}: {}: {}",
                        e.column(),
                        json_what(&e),
                        json_detail(&e)
                    )
                })
                .and_then(|value| {
                    sluice_engine::check_numbers(&value)
                        .map(|()| value)
                        .map_err(|n| format!("line {number}: {n} is beyond a 64-bit float's range"))
                }),
        };
        records.push(Record {
            content: content.map_err(|reason| Malformed {
                raw: line.to_vec(),
                reason,
            }),
            line: Some(number),
            source_line: None,
        });
    }
    records
}

/// One record per row. The field count is checked here (not by the csv reader), so that a row
/// with too many or too few fields is a malformed record, not the end of the file.
fn decode_csv(bytes: &[u8], options: &CsvOptions) -> Result<Vec<Record>, DecodeError> {
    let delimiter = options.delimiter.value.as_bytes();
    let &[delimiter] = delimiter else {
        return Err(DecodeError::CsvDelimiter);
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut row = csv::ByteRecord::new();
    let mut headers: Option<Vec<String>> = None;
    let mut expected: Option<usize> = None;
    let mut records = Vec::new();
    loop {
        let start = reader.position().byte() as usize;
        let more = match reader.read_byte_record(&mut row) {
            Ok(more) => more,
            // Reading from memory with lengths and UTF-8 checked here, the reader has no
            // error left to report; should one come anyway, the file cannot be read at all.
            Err(e) => return Err(DecodeError::Csv(e)),
        };
        if !more {
            break;
        }
        let end = reader.position().byte() as usize;
        let (raw, skipped) = raw_row(bytes, start, end);
        // The reader counts from where it started looking, blank lines before the row
        // included; the row itself starts after them.
        let source_line = row.position().map_or(1, |p| p.line() as usize) + skipped;
        if options.header && headers.is_none() {
            let header = csv::StringRecord::from_byte_record(row.clone()).map_err(|e| {
                DecodeError::CsvHeader {
                    line: source_line,
                    field: e.utf8_error().field() + 1,
                }
            })?;
            expected = Some(header.len());
            headers = Some(header.iter().map(str::to_owned).collect());
            continue;
        }
        let number = records.len() + 1;
        let expected_len = *expected.get_or_insert(row.len());
        let content = if row.len() != expected_len {
            let against = if headers.is_some() {
                "the header has"
            } else {
                "the first row has"
            };
            Err(format!(
                "csv row {number} (line {source_line}): {} fields where {against} {expected_len}",
                row.len()
            ))
        } else {
            match csv::StringRecord::from_byte_record(row.clone()) {
                Err(e) => Err(format!(
                    "csv row {number} (line {source_line}): field {} is not UTF-8 text",
                    e.utf8_error().field() + 1
                )),
                Ok(fields) => Ok(match &headers {
                    Some(headers) => Value::Object(
                        headers
                            .iter()
                            .zip(fields.iter())
                            .map(|(k, v)| (k.clone(), Value::String(v.to_owned())))
                            .collect(),
                    ),
                    None => {
                        Value::Array(fields.iter().map(|v| Value::String(v.to_owned())).collect())
                    }
                }),
            }
        };
        records.push(Record {
            content: content.map_err(|reason| Malformed { raw, reason }),
            line: Some(number),
            source_line: Some(source_line),
        });
    }
    Ok(records)
}

/// The bytes of one row as they are in the file, without the blank lines the reader skipped
/// before it (their number is returned too) and without its line ending.
fn raw_row(bytes: &[u8], start: usize, end: usize) -> (Vec<u8>, usize) {
    let raw = bytes.get(start..end.min(bytes.len())).unwrap_or_default();
    let first = raw
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .unwrap_or(raw.len());
    let skipped = raw[..first].iter().filter(|&&b| b == b'\n').count();
    let raw = &raw[first..];
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    (raw.strip_suffix(b"\r").unwrap_or(raw).to_vec(), skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payloads(records: &[Record]) -> Vec<Value> {
        records
            .iter()
            .map(|r| r.content.clone().unwrap_or(Value::Null))
            .collect()
    }

    #[test]
    fn formats_decode() {
        let csv = CsvOptions::default();
        let r = decode_file(
            br#"{"a":1}"#,
            FileFormat::Json,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        assert_eq!(payloads(&r), [json!({"a": 1})]);
        let r = decode_file(
            b"{\"a\":1}\n\n{\"a\":2}\n",
            FileFormat::Ndjson,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].line, Some(3));
        let r = decode_file(
            b"id,name\n1,x\n2,y\n",
            FileFormat::Csv,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        assert_eq!(r[1].content, Ok(json!({"id": "2", "name": "y"})));
        assert_eq!((r[1].line, r[1].source_line), (Some(2), Some(3)));
        let r = decode_file(b"hi", FileFormat::Text, &csv, &XmlReading::default()).unwrap();
        assert_eq!(payloads(&r), [json!("hi")]);
        let r = decode_file(&[0, 255], FileFormat::Bytes, &csv, &XmlReading::default()).unwrap();
        assert_eq!(payloads(&r), [json!("AP8=")]);
    }

    #[test]
    fn bad_content_says_why_and_where() {
        let csv = CsvOptions::default();
        let e = |bytes: &[u8], format| {
            decode_file(bytes, format, &csv, &XmlReading::default())
                .unwrap_err()
                .to_string()
        };
        let json = e(b"{\"a\":\n  nope}", FileFormat::Json);
        assert!(json.contains("malformed JSON at line 2"), "{json}");
        let binary = e(&[0x7b, 0xff, 0x00], FileFormat::Json);
        assert_eq!(
            binary,
            "the file is not UTF-8 text (binary content?): invalid byte at offset 1"
        );
        // The same numbers the body parse refuses: a file is no way around it.
        let number = e(br#"{"a":[1e400]}"#, FileFormat::Json);
        assert!(
            number.contains("the number") && number.contains("at /a/0"),
            "{number}"
        );
        let mut semicolons = CsvOptions::default();
        semicolons.delimiter.value = sluice_flow::Text::from(";;");
        let delimiter =
            decode_file(b"a", FileFormat::Csv, &semicolons, &XmlReading::default()).unwrap_err();
        assert!(
            matches!(delimiter, DecodeError::CsvDelimiter),
            "{delimiter}"
        );
        // The text the trigger keeps is the typed error's.
        assert_eq!(
            decode_file(
                &[0x7b, 0xff, 0x00],
                FileFormat::Json,
                &csv,
                &XmlReading::default()
            )
            .unwrap_err()
            .to_string(),
            binary
        );
        let r = decode_file(
            b"{\"n\":1}\n{\"n\":-1e400}\n",
            FileFormat::Ndjson,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        let bad = r[1].content.clone().unwrap_err();
        assert!(
            bad.reason.starts_with("line 2: the number"),
            "{}",
            bad.reason
        );
    }

    #[test]
    fn a_malformed_ndjson_line_fails_alone_and_keeps_its_bytes() {
        let csv = CsvOptions::default();
        let r = decode_file(
            b"{}\r\n{x}\n\xff\n{\"b\":2}",
            FileFormat::Ndjson,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        assert_eq!(r.len(), 4);
        let bad = r[1].content.clone().unwrap_err();
        assert_eq!(bad.raw, b"{x}");
        assert!(
            bad.reason.starts_with("line 2 column 2: malformed JSON"),
            "{}",
            bad.reason
        );
        let binary = r[2].content.clone().unwrap_err();
        assert_eq!(binary.raw, b"\xff");
        assert!(
            binary.reason.contains("line 3: not UTF-8"),
            "{}",
            binary.reason
        );
        assert_eq!(r[3].content, Ok(json!({"b": 2})));
        assert_eq!(r[3].line, Some(4));
    }

    #[test]
    fn a_malformed_csv_row_fails_alone_with_its_raw_line_and_position() {
        let csv = CsvOptions::default();
        let text = b"id,name\n1,x\n\n2,y,surplus\n\"3\",\"multi\nline\"\n4,\xffz\n5,e\n";
        let r = decode_file(text, FileFormat::Csv, &csv, &XmlReading::default()).unwrap();
        assert_eq!(r.len(), 5, "{r:?}");
        let bad = r[1].content.clone().unwrap_err();
        assert_eq!(bad.raw, b"2,y,surplus");
        assert_eq!(
            bad.reason,
            "csv row 2 (line 4): 3 fields where the header has 2"
        );
        assert_eq!((r[1].line, r[1].source_line), (Some(2), Some(4)));
        assert_eq!(r[2].content, Ok(json!({"id": "3", "name": "multi\nline"})));
        let binary = r[3].content.clone().unwrap_err();
        assert_eq!(binary.raw, b"4,\xffz");
        assert!(
            binary
                .reason
                .contains("row 4 (line 7): field 2 is not UTF-8"),
            "{}",
            binary.reason
        );
        assert_eq!(r[4].content, Ok(json!({"id": "5", "name": "e"})));
        assert_eq!(r[4].source_line, Some(8));
    }

    #[test]
    fn a_csv_without_header_counts_fields_against_the_first_row() {
        let csv = CsvOptions {
            header: false,
            ..CsvOptions::default()
        };
        let r = decode_file(b"a,b\nc\n", FileFormat::Csv, &csv, &XmlReading::default()).unwrap();
        assert_eq!(r[0].content, Ok(json!(["a", "b"])));
        let bad = r[1].content.clone().unwrap_err();
        assert_eq!(
            bad.reason,
            "csv row 2 (line 2): 1 fields where the first row has 2"
        );
    }

    #[test]
    fn a_byte_order_mark_is_not_content() {
        let csv = CsvOptions::default();
        let r = decode_file(
            b"\xEF\xBB\xBF{\"a\":1}",
            FileFormat::Json,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        assert_eq!(payloads(&r), [json!({"a": 1})]);
        let r = decode_file(
            b"\xEF\xBB\xBF{\"a\":1}\n",
            FileFormat::Ndjson,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        assert_eq!(payloads(&r), [json!({"a": 1})]);
        let r = decode_file(
            b"\xEF\xBB\xBFid,n\n1,2\n",
            FileFormat::Csv,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        assert_eq!(payloads(&r), [json!({"id": "1", "n": "2"})]);
        let r = decode_file(
            b"\xEF\xBB\xBFhi",
            FileFormat::Text,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        assert_eq!(payloads(&r), [json!("hi")]);
        // `bytes` is the file as it is, mark included.
        let r = decode_file(
            b"\xEF\xBB\xBF",
            FileFormat::Bytes,
            &csv,
            &XmlReading::default(),
        )
        .unwrap();
        assert_eq!(payloads(&r), [json!("77u/")]);
    }
}
