//! Turning file content into message payloads, per `format:`.

use base64::Engine as _;
use serde_json::Value;
use sluice_flow::{CsvOptions, FileFormat};

#[derive(Debug)]
/// One message from a file: its payload and its 1-based line (ndjson) or row (csv).
pub struct Record {
    /// The payload.
    pub payload: Value,
    /// Line or row number, for multi-record formats.
    pub line: Option<usize>,
}

/// Decodes a whole file; an error says why, with a position where there is one.
pub fn decode(bytes: &[u8], format: FileFormat, csv: &CsvOptions) -> Result<Vec<Record>, String> {
    let single = |payload| {
        Ok(vec![Record {
            payload,
            line: None,
        }])
    };
    match format {
        FileFormat::Bytes => single(Value::String(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        )),
        FileFormat::Text => single(Value::String(utf8(bytes)?.to_owned())),
        FileFormat::Json => {
            let text = utf8(bytes)?;
            match serde_json::from_str(text) {
                Ok(value) => single(value),
                Err(e) => Err(json_error(&e)),
            }
        }
        FileFormat::Ndjson => {
            let text = utf8(bytes)?;
            let mut records = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let payload = serde_json::from_str(line)
                    .map_err(|e| format!("line {}: {}", i + 1, json_error(&e)))?;
                records.push(Record {
                    payload,
                    line: Some(i + 1),
                });
            }
            Ok(records)
        }
        FileFormat::Csv => decode_csv(utf8(bytes)?, csv),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "the file is not UTF-8 text (binary content?): invalid byte at offset {}",
            e.valid_up_to()
        )
    })
}

fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Eof => {
            "malformed JSON: the file ends in the middle of a value"
        }
        _ => "malformed JSON",
    };
    let detail = e.to_string();
    let detail = detail.split(" at line ").next().unwrap_or(&detail);
    format!(
        "{what} at line {} column {}: {detail}",
        e.line(),
        e.column()
    )
}

fn decode_csv(text: &str, options: &CsvOptions) -> Result<Vec<Record>, String> {
    let delimiter = options.delimiter.value.as_bytes();
    let &[delimiter] = delimiter else {
        return Err("the csv delimiter must be one ASCII character".to_owned());
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(options.header)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Option<Vec<String>> = if options.header {
        Some(
            reader
                .headers()
                .map_err(|e| format!("cannot read the csv header: {e}"))?
                .iter()
                .map(str::to_owned)
                .collect(),
        )
    } else {
        None
    };
    let mut records = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| format!("csv row {}: {e}", i + 1))?;
        let payload = match &headers {
            Some(headers) => Value::Object(
                headers
                    .iter()
                    .zip(row.iter())
                    .map(|(k, v)| (k.clone(), Value::String(v.to_owned())))
                    .collect(),
            ),
            None => Value::Array(row.iter().map(|v| Value::String(v.to_owned())).collect()),
        };
        records.push(Record {
            payload,
            line: Some(i + 1),
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_decode() {
        let csv = CsvOptions::default();
        let r = decode(br#"{"a":1}"#, FileFormat::Json, &csv).unwrap();
        assert_eq!(r[0].payload, json!({"a": 1}));
        let r = decode(b"{\"a\":1}\n\n{\"a\":2}\n", FileFormat::Ndjson, &csv).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].line, Some(3));
        let r = decode(b"id,name\n1,x\n2,y\n", FileFormat::Csv, &csv).unwrap();
        assert_eq!(r[1].payload, json!({"id": "2", "name": "y"}));
        let r = decode(b"hi", FileFormat::Text, &csv).unwrap();
        assert_eq!(r[0].payload, json!("hi"));
        let r = decode(&[0, 255], FileFormat::Bytes, &csv).unwrap();
        assert_eq!(r[0].payload, json!("AP8="));
    }

    #[test]
    fn bad_content_says_why_and_where() {
        let csv = CsvOptions::default();
        let e = decode(b"{\"a\":\n  nope}", FileFormat::Json, &csv).unwrap_err();
        assert!(e.contains("malformed JSON at line 2"), "{e}");
        let e = decode(&[0x7b, 0xff, 0x00], FileFormat::Json, &csv).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
        let e = decode(b"{}\n{x}\n", FileFormat::Ndjson, &csv).unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
    }
}
