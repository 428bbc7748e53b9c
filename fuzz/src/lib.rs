//! The checks behind sluice's fuzz targets: one function per parser, each taking the raw
//! fuzz input, never panicking on bad input, and asserting what must hold for any input.
//!
//! They live in a library, not in the targets, so that `tests/fuzz_regressions.rs` replays the
//! saved crash inputs and the seed corpus through exactly the same checks on stable Rust, and
//! so that `cargo test --workspace` stops compiling the moment an API change would break the
//! fuzz targets (the `fuzz/` crate itself is outside the workspace).

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use serde_json::Value;
use sluice_connectors::StandardConnectors;
use sluice_connectors::http::HttpHub;
use sluice_engine::{BuildContext, Connectors, Envelope, Inlet, Outcome, Reply};
use sluice_engine::{Folders, Meta, Payload};
use sluice_flow::{CsvOptions, Diagnostic, FileFormat, MessageFormat, OutputFormat, Text};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The path the fuzzed flow text claims to come from, for names and diagnostics.
const FLOW_PATH: &str = "flows/fuzz.yaml";

/// Connectors for loading flows; building a trigger or sink opens nothing.
static CONNECTORS: LazyLock<StandardConnectors> = LazyLock::new(StandardConnectors::default);

/// Flow loader: YAML → model with diagnostics, then the compile step (expressions, scripts,
/// contracts, sinks and triggers). Every diagnostic about the flow text must point inside it.
pub fn flow_load(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(FLOW_PATH);
    let flow = match sluice_flow::parse_flow(path, source.to_owned()) {
        Ok(flow) => flow,
        Err(diagnostic) => {
            check_diagnostic(&diagnostic, path, source);
            return;
        }
    };
    // References to schemas and scripts resolve in a folder that does not exist, so the
    // compile step reads nothing but what the flow names by a path of its own.
    let nowhere = PathBuf::from("/nonexistent/sluice-fuzz");
    let folders = Folders {
        schemas: nowhere.join("schemas"),
        scripts: nowhere.join("scripts"),
    };
    if let Err(diagnostics) = sluice_engine::compile(&flow, &folders, &*CONNECTORS) {
        assert!(!diagnostics.is_empty(), "compile failed without saying why");
        for diagnostic in &diagnostics {
            check_diagnostic(diagnostic, path, source);
        }
    }
}

/// A diagnostic has a message, renders, and its position is inside the text it names.
fn check_diagnostic(diagnostic: &Diagnostic, path: &Path, source: &str) {
    assert!(
        !diagnostic.message.trim().is_empty(),
        "a diagnostic without a message: {diagnostic:?}"
    );
    let _ = diagnostic.render();
    let _ = diagnostic.to_string();
    let Some(span) = diagnostic.span else {
        return;
    };
    if diagnostic.file != path {
        // A contract or script file: its own text is not at hand here.
        return;
    }
    let lines = yaml_lines(source);
    assert!(
        span.line >= 1 && span.line as usize <= lines.len() + 1,
        "line {} is outside the {} lines of the flow: {diagnostic:?}",
        span.line,
        lines.len()
    );
    let width = lines
        .get(span.line as usize - 1)
        .map_or(0, |line| line.chars().count());
    assert!(
        span.column >= 1 && span.column as usize <= width + 1,
        "column {} is outside line {} ({width} characters): {diagnostic:?}",
        span.column,
        span.line
    );
}

/// The lines of a YAML text, split at every YAML line break (`\r\n`, `\n`, or a lone `\r`).
fn yaml_lines(source: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(['\n', '\r']) {
        lines.push(&rest[..at]);
        let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + skip..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
}

const FILE_FORMATS: [FileFormat; 6] = [
    FileFormat::Json,
    FileFormat::Ndjson,
    FileFormat::Csv,
    FileFormat::Text,
    FileFormat::Bytes,
    FileFormat::Xml,
];

const BODY_FORMATS: [MessageFormat; 4] = [
    MessageFormat::Json,
    MessageFormat::Text,
    MessageFormat::Bytes,
    MessageFormat::Xml,
];

/// Payload decoders for every format: the first byte picks one of the file trigger's six
/// formats or the broker bodies' four, the rest is the content.
pub fn payload_decode(data: &[u8]) {
    let Some((&selector, content)) = data.split_first() else {
        return;
    };
    let selector = usize::from(selector) % (FILE_FORMATS.len() + BODY_FORMATS.len());
    match FILE_FORMATS.get(selector) {
        Some(&format) => file_decode(content, format, &CsvOptions::default()),
        None => body_decode(content, BODY_FORMATS[selector - FILE_FORMATS.len()]),
    }
}

/// A file's content decoded by the file trigger: every record re-encodes to the same value,
/// text and bytes keep the content exactly, record numbers are in order and in range.
fn file_decode(content: &[u8], format: FileFormat, csv: &CsvOptions) {
    let utf8 = std::str::from_utf8(content).ok();
    let input = sluice_engine::InputFormat {
        format,
        csv: csv.clone(),
        xml: Default::default(),
    };
    let records = match sluice_connectors::file::decode_input(content, &input) {
        Ok(records) => records,
        Err(why) => {
            let why = why.to_string();
            assert!(!why.trim().is_empty(), "a decode error without a reason");
            assert!(
                format != FileFormat::Bytes,
                "`bytes` refused content: {why}"
            );
            assert!(
                format != FileFormat::Text || utf8.is_none(),
                "`text` refused UTF-8 content: {why}"
            );
            return;
        }
    };
    // CSV ends a row at a lone `\r` too, so lines are counted the YAML way.
    let line_count = utf8.map_or(0, |text| yaml_lines(text).len());
    let mut previous = 0;
    for (value, line) in &records {
        check_reencodes(value);
        match format {
            FileFormat::Ndjson | FileFormat::Csv => {
                let line = line.unwrap_or_else(|| panic!("a {format:?} record without a number"));
                assert!(
                    line > previous && line <= line_count,
                    "record number {line} after {previous}, of {line_count} lines"
                );
                previous = line;
            }
            FileFormat::Json | FileFormat::Text | FileFormat::Bytes | FileFormat::Xml => {
                assert_eq!(records.len(), 1, "{format:?} is one record per file");
                assert_eq!(*line, None, "{format:?} records have no number");
            }
        }
    }
    match format {
        FileFormat::Text => {
            let text = utf8.expect("`text` accepted content that is not UTF-8");
            let value = records[0].0.as_str().expect("`text` gives a string");
            assert!(
                value == text || Some(value) == text.strip_prefix('\u{feff}'),
                "`text` changed the content"
            );
        }
        FileFormat::Bytes => {
            let mut payload = Payload::from_json(records[0].0.clone());
            let back = sluice_connectors::codec::encode(MessageFormat::Bytes, &mut payload)
                .expect("the base64 of `bytes` decodes");
            assert_eq!(back, content, "`bytes` changed the content");
        }
        FileFormat::Json | FileFormat::Ndjson | FileFormat::Csv | FileFormat::Xml => {}
    }
}

/// A decoded value goes out through every file sink format, and compact JSON reads back as
/// the same value.
fn check_reencodes(value: &Value) {
    for format in [
        OutputFormat::Json,
        OutputFormat::Pretty,
        OutputFormat::NdjsonLine,
        OutputFormat::Text,
    ] {
        let mut payload = Payload::from_json(value.clone());
        let bytes = sluice_connectors::file::serialize(format, None, &mut payload)
            .unwrap_or_else(|e| panic!("a decoded value does not serialize as {format:?}: {e}"));
        if format == OutputFormat::Json {
            let back: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("the written JSON does not read back: {e}"));
            assert_eq!(&back, value, "the value changed on its way out");
        }
    }
}

/// A broker body: what `decode` accepts must be usable in every form a step can ask for (it
/// never turns into an error or `null` later), and must encode back to the same body.
fn body_decode(body: &[u8], format: MessageFormat) {
    let mut payload = match sluice_connectors::codec::decode(format, body) {
        Ok(payload) => payload,
        Err(why) => {
            let why = why.to_string();
            assert!(!why.trim().is_empty(), "a decode error without a reason");
            assert!(
                matches!(format, MessageFormat::Json | MessageFormat::Xml)
                    || (format == MessageFormat::Text && std::str::from_utf8(body).is_err()),
                "{format:?} refused a body it must accept: {why}"
            );
            return;
        }
    };
    check_payload(&mut payload, body, format == MessageFormat::Json);
    let encoded = sluice_connectors::codec::encode(format, &mut payload)
        .unwrap_or_else(|e| panic!("a decoded {format:?} body does not encode: {e:?}"));
    match format {
        MessageFormat::Text | MessageFormat::Bytes => {
            assert_eq!(encoded, body, "{format:?} changed the body")
        }
        MessageFormat::Json | MessageFormat::Xml => {
            let mut again = sluice_connectors::codec::decode(format, &encoded)
                .unwrap_or_else(|e| panic!("an encoded body does not decode again: {e}"));
            let first = payload.json().cloned().expect("checked above");
            assert_eq!(
                again.json().ok(),
                Some(&first),
                "the payload changed on a round trip"
            );
        }
    }
}

/// A payload accepted at the door converts to JSON and JMESPath form and serializes; a JSON
/// body that is not the literal `null` never becomes `null`.
fn check_payload(payload: &mut Payload, body: &[u8], json_body: bool) {
    let compact = payload
        .to_json_vec()
        .unwrap_or_else(|e| panic!("an accepted payload does not serialize: {e}"));
    let mut jmes_first = payload.snapshot();
    jmes_first
        .jmes()
        .unwrap_or_else(|e| panic!("an accepted payload has no JMESPath form: {e}"));
    let value = payload
        .json()
        .unwrap_or_else(|e| panic!("an accepted payload has no JSON form: {e}"))
        .clone();
    if json_body && value.is_null() {
        let text = String::from_utf8_lossy(body);
        assert_eq!(text.trim(), "null", "an accepted body became null");
    }
    let back: Value = serde_json::from_slice(&compact)
        .unwrap_or_else(|e| panic!("the serialized payload does not read back: {e}"));
    assert_eq!(back, value, "serializing changed the payload");
}

/// Templates: the first line is the template text, the rest a JSON payload to render it
/// against. Compile errors point inside the template; rendering never panics and gives the
/// same text whichever form the payload is in.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, payload) = text.split_once('\n').unwrap_or((text, ""));
    let template = match sluice_engine::Template::compile(source) {
        Ok(template) => template,
        Err(e) => {
            assert!(!e.message.trim().is_empty(), "an error without a reason");
            assert!(
                e.offset <= source.chars().count(),
                "offset {} is past the end of the template ({} characters)",
                e.offset,
                source.chars().count()
            );
            return;
        }
    };
    // The payload is what a trigger would accept: the body parse refuses what no step could
    // represent (a number past f64's range, too deep a nesting), so such text is no payload.
    let value = sluice_engine::parse_json(payload.as_bytes()).unwrap_or_else(
        |_| serde_json::json!({"id": "o-1", "n": 3, "ok": true, "customer": {"id": "c-7"}}),
    );
    let mut meta = Meta::new();
    meta.insert("message_id".to_owned(), "m-1".to_owned());
    meta.insert("file.name".to_owned(), "order 1.json".to_owned());
    let meta = Arc::new(meta);
    let from_json = template.render(&mut Payload::from_json(value.clone()), &meta);
    if let Err(why) = &from_json {
        assert!(!why.trim().is_empty(), "a render error without a reason");
    }
    if template.is_literal() {
        assert_eq!(
            from_json.as_deref(),
            Ok(source),
            "a template without holes renders as itself"
        );
    }
    let bytes = serde_json::to_vec(&value).expect("a JSON value serializes");
    let mut raw = Payload::from_json_bytes(bytes).expect("serialized JSON is JSON");
    let from_raw = template.render(&mut raw, &meta);
    assert_eq!(
        from_json.is_ok(),
        from_raw.is_ok(),
        "the payload's form decides whether the template renders: {from_json:?} / {from_raw:?}"
    );
    if let (Ok(a), Ok(b)) = (&from_json, &from_raw) {
        assert_eq!(a, b, "the payload's form changes the rendered text");
    }
}

/// CSV rows: the first byte picks the header flag and the delimiter (some of them invalid),
/// the rest is the file.
pub fn csv_rows(data: &[u8]) {
    let Some((&options, content)) = data.split_first() else {
        return;
    };
    let delimiters = [",", ";", "\t", "|", "\"", "é", ""];
    let delimiter = delimiters[usize::from(options >> 1) % delimiters.len()];
    let mut csv = CsvOptions {
        header: options & 1 == 1,
        ..CsvOptions::default()
    };
    csv.delimiter.value = Text::from(delimiter);
    file_decode(content, FileFormat::Csv, &csv);
    let input = sluice_engine::InputFormat {
        format: FileFormat::Csv,
        csv: csv.clone(),
        xml: Default::default(),
    };
    let Ok(records) = sluice_connectors::file::decode_input(content, &input) else {
        return;
    };
    assert_eq!(
        delimiter.len(),
        1,
        "the delimiter `{delimiter}` is not one byte, yet rows were read"
    );
    // Rows are not flexible: every row has the shape of the first (the header's).
    let shape = |value: &Value| match value {
        Value::Object(map) if csv.header => map.keys().cloned().collect::<Vec<_>>(),
        Value::Array(items) if !csv.header => vec![items.len().to_string()],
        other => panic!("a csv row decoded as {other}"),
    };
    let mut first = None;
    for (value, _) in &records {
        let fields: Vec<&Value> = match value {
            Value::Object(map) => map.values().collect(),
            Value::Array(items) => items.iter().collect(),
            _ => Vec::new(),
        };
        assert!(
            fields.iter().all(|v| v.is_string()),
            "a csv field is not a string: {value}"
        );
        let this = shape(value);
        match &first {
            None => first = Some(this),
            Some(first) => assert_eq!(first, &this, "rows of different shapes"),
        }
    }
}

/// The request → message path of the `http` trigger, with three routes: plain, HMAC-signed,
/// and bearer-protected with path parameters.
const HTTP_FLOWS: [&str; 3] = [
    "name: plain\ntrigger:\n  http: { path: /orders, max_body: 2KB }\nsteps: []\n",
    "name: signed\ntrigger:\n  http:\n    path: /hooks/{source}\n    auth: { hmac: { secret: fuzz-secret, header: x-signature, prefix: \"sha256=\" } }\nsteps: []\n",
    "name: guarded\ntrigger:\n  http:\n    path: /items/{id}/{name}\n    method: GET\n    auth: { bearer: fuzz-token }\nsteps: []\n",
];

/// Headers that carry credentials: never copied into a message's metadata.
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

struct HttpHarness {
    runtime: tokio::runtime::Runtime,
    hub: Arc<HttpHub>,
    inlets: Mutex<Vec<mpsc::Receiver<Envelope>>>,
}

static HTTP: LazyLock<HttpHarness> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The hub binds a port for its listener when the first route is added; nothing is sent
    // through it: requests go straight to the handler.
    let hub = HttpHub::new("127.0.0.1:0");
    let connectors = StandardConnectors::new(hub.clone());
    let mut inlets = Vec::new();
    for source in HTTP_FLOWS {
        let flow = sluice_flow::parse_flow(Path::new("flows/route.yaml"), source.to_owned())
            .expect("the route flow parses");
        let trigger = connectors
            .trigger(&flow.file.trigger, &BuildContext { flow: &flow })
            .expect("the route flow builds");
        let (tx, rx) = mpsc::channel(4);
        let inlet = Inlet::new(&flow.name, tx, Arc::default());
        runtime.spawn(trigger.run(inlet, tokio_util::sync::CancellationToken::new()));
        inlets.push(rx);
    }
    // The triggers register their routes once the runtime runs them.
    let deadline = Instant::now() + Duration::from_secs(10);
    runtime.block_on(async {
        for probe in ["/orders", "/hooks/x", "/items/a/b"] {
            loop {
                let request = Request::builder()
                    .method(Method::DELETE)
                    .uri(probe)
                    .body(Body::empty())
                    .expect("a probe request");
                if hub.answer_request(request).await.status() != StatusCode::NOT_FOUND {
                    break;
                }
                assert!(Instant::now() < deadline, "route {probe} never registered");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    HttpHarness {
        runtime,
        hub,
        inlets: Mutex::new(inlets),
    }
});

/// One HTTP request, written as `METHOD target\nname: value\n…\n\nbody`. A message that
/// reaches a flow has a usable payload and no credentials in its metadata; the answer has a
/// status the listener documents and a JSON body.
pub fn http_request(data: &[u8]) {
    let Some((request, sent)) = parse_request(data) else {
        return;
    };
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let harness = &*HTTP;
    let mut inlets = harness.inlets.lock().unwrap_or_else(|p| p.into_inner());
    let (status, body, replied) = harness.runtime.block_on(async {
        let answer = harness.hub.answer_request(request);
        tokio::pin!(answer);
        let mut replied = None;
        let response = loop {
            let [a, b, c] = &mut inlets[..] else {
                unreachable!("three routes")
            };
            let envelope = tokio::select! {
                response = &mut answer => break response,
                Some(envelope) = a.recv() => envelope,
                Some(envelope) = b.recv() => envelope,
                Some(envelope) = c.recv() => envelope,
            };
            let Envelope {
                mut message, ack, ..
            } = envelope;
            check_message(&mut message, &method, &path, sent);
            let payload = message.payload.json().cloned().unwrap_or(Value::Null);
            replied = Some(payload.clone());
            let reply = Reply {
                payload,
                status: None,
                headers: Vec::new(),
                xml: None,
                message_id: sluice_engine::Ids::message_id(&*message.meta).to_owned(),
            };
            ack.ack(Outcome::Delivered(Some(reply))).await;
        };
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the answer's body reads");
        (status, body, replied)
    });
    let documented = [200, 400, 401, 404, 405, 413, 415, 422];
    assert!(
        documented.contains(&status.as_u16()),
        "unexpected status {status} for {method} {path}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        replied.is_some(),
        status == StatusCode::OK,
        "a request is answered 200 exactly when its message reached the flow ({status})"
    );
    let answer = serde_json::from_slice::<Value>(&body).unwrap_or_else(|e| {
        panic!(
            "the answer ({status}) is not JSON: {e}: {}",
            String::from_utf8_lossy(&body)
        )
    });
    if let Some(replied) = replied {
        assert_eq!(answer, replied, "the answer is not the flow's reply");
    }
}

fn check_message(message: &mut sluice_engine::Message, method: &str, path: &str, sent: &[u8]) {
    assert_eq!(
        message.meta.get("http.method").map(String::as_str),
        Some(method)
    );
    assert_eq!(
        message.meta.get("http.path").map(String::as_str),
        Some(path)
    );
    for secret in SECRET_HEADERS {
        let key = format!("http.header.{secret}");
        assert!(
            !message.meta.contains_key(&key),
            "`{secret}` was copied into the metadata"
        );
    }
    if message.undecodable_reason().is_none() {
        // An empty (or all-blank) body is the payload `null` by design.
        let blank = sent.iter().all(u8::is_ascii_whitespace);
        check_payload(&mut message.payload, sent, !blank);
    }
}

/// Builds a request from the fuzz input; `None` when it is not a request hyper would hand
/// over. The body length is the one hyper enforces: a `content-length` from the input is
/// replaced by the true length (or dropped, as for a chunked body).
fn parse_request(data: &[u8]) -> Option<(Request<Body>, &[u8])> {
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let target = std::str::from_utf8(&first[space + 1..]).ok()?;
    let mut builder = Request::builder().method(method).uri(target);
    let mut chunked = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        if name == axum::http::header::CONTENT_LENGTH
            || name == axum::http::header::TRANSFER_ENCODING
        {
            chunked |= name == axum::http::header::TRANSFER_ENCODING;
            continue;
        }
        builder = builder.header(name, value);
    }
    if !chunked {
        builder = builder.header(axum::http::header::CONTENT_LENGTH, body.len());
    }
    let request = builder.body(Body::from(body.to_vec())).ok()?;
    Some((request, body))
}

/// XML documents: what is read writes back and reads back as the same value, and the records
/// at `/<root>/<first child>` are the children the whole document holds, counted and read the
/// same in both passes.
pub fn xml_document(data: &[u8]) {
    use sluice_xml::{ReadOptions, RecordPath, Records, count_records};
    let options = ReadOptions::default();
    let value = match sluice_xml::to_json(data, &options) {
        Ok(value) => value,
        Err(why) => {
            assert!(
                !why.reason.trim().is_empty(),
                "an XML error without a reason"
            );
            assert!(
                why.line >= 1 && why.column >= 1,
                "positions are 1-based: {why}"
            );
            return;
        }
    };
    let xml = sluice_xml::to_xml(&value, None)
        .unwrap_or_else(|e| panic!("a document read does not write back: {e}"));
    let again = sluice_xml::to_json(&xml, &options)
        .unwrap_or_else(|e| panic!("a document written does not read back: {e}"));
    assert_eq!(again, value, "the value changed on its way through XML");
    let Some((root, content)) = value.as_object().and_then(|map| map.iter().next()) else {
        panic!("a document is an object of one key: {value}");
    };
    let Some((child, children)) = content.as_object().and_then(|map| {
        map.iter()
            .find(|(k, _)| !k.starts_with('@') && *k != "#text")
    }) else {
        return;
    };
    let path = RecordPath::parse(&format!("/{root}/{child}")).expect("names read are names");
    let expected: Vec<Value> = match children {
        Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    let counted = count_records(data, path.clone(), options.clone())
        .unwrap_or_else(|e| panic!("a document read is not counted: {e}"));
    assert_eq!(counted, expected.len(), "the count of {path}");
    let records: Vec<Value> = Records::new(data, path, options)
        .map(|r| r.map(|r| r.value))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("a document read gives no records: {e}"));
    assert_eq!(records, expected, "the records are the document's children");
}
