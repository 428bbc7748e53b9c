//! `format: xml`: a large document split into records with flat memory, a malformed one to
//! `.error/` with its line and column, a DTD (XXE) refused, HTTP bodies and answers in XML,
//! and JSON → XML → JSON through the binary.

use crate::support::*;
use std::io::Write;

const SPLIT_FLOW: &str = r#"name: xml-split
trigger:
  file:
    path: inbox/xml
    glob: "*.xml"
    format: xml
    max_size: 1GiB
    xml: { record: /Orders/Order, arrays: [line] }
steps:
  # Every record is read and decided on; one in a thousand is written out.
  - filter: "ends_with(\"@id\", '000')"
  - to: out
sinks:
  out:
    file: { path: outbox/xml, name: "{{\"@id\"}}.json" }
"#;

/// One `Order` element of about 2 KB.
fn order_xml(i: usize) -> String {
    let note = "n".repeat(1900);
    format!(
        "  <Order id=\"o-{i:06}\">\n    <customer tier=\"gold\">c-{}</customer>\n    <line><sku>A-1</sku><qty>2</qty></line>\n    <note>{note}</note>\n  </Order>\n",
        i % 997
    )
}

#[test]
fn a_200_mb_document_is_split_into_100000_records_with_flat_memory() {
    const N: usize = 100_000;
    let sb = Sandbox::alone();
    sb.write("flows/split.yaml", SPLIT_FLOW);
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("xml-split");

    // Written beside the folder, then renamed in: the trigger sees it whole.
    let staging = sb.path("orders.xml.part");
    {
        let file = std::fs::File::create(&staging).unwrap();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Orders>\n")
            .unwrap();
        for i in 0..N {
            out.write_all(order_xml(i).as_bytes()).unwrap();
        }
        out.write_all(b"</Orders>\n").unwrap();
        out.flush().unwrap();
    }
    let size = std::fs::metadata(&staging).unwrap().len();
    assert!(size > 200_000_000, "the document is {size} bytes");
    std::fs::rename(&staging, sb.path("inbox/xml/orders.xml")).unwrap();

    sluice.expect_within(secs(600), "orders.xml in .done/", || {
        sb.exists("inbox/xml/.done/orders.xml")
    });
    let written = sb.names("outbox/xml");
    assert_eq!(written.len(), N / 1000, "one output per thousand records");
    let first = sb.read_json("outbox/xml/o-000000.json");
    assert_eq!(first["customer"]["#text"], "c-0", "{first:#}");
    assert_eq!(
        first["line"][0]["qty"], "2",
        "`line` is always an array: {first:#}"
    );
    let peak = sluice.peak_rss_kib();
    eprintln!("{size} bytes, {N} records: peak RSS {} MiB", peak / 1024);
    // A read into memory would take the document's 200 MB at least once.
    assert!(
        peak < 100 * 1024,
        "peak RSS {} MiB: the document was not streamed",
        peak / 1024
    );
    assert_eq!(sb.count("inbox/xml/.error"), 0, "{}", sluice.log_tail(30));
}

const FILE_FLOW: &str = r#"name: xml-files
trigger:
  file:
    path: inbox/docs
    glob: "*.xml"
    format: xml
steps:
  - to: back
sinks:
  back:
    file: { path: outbox/docs, name: "{{meta('file.name')}}", format: xml }
"#;

fn sidecar_message(sb: &Sandbox, rel: &str) -> String {
    let side = sb.read_json(rel);
    assert_eq!(side["kind"], "trigger", "{side:#}");
    side["message"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_malformed_document_goes_to_error_with_its_line_and_column() {
    let sb = Sandbox::new();
    sb.write("flows/files.yaml", FILE_FLOW);
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("xml-files");
    sb.write_atomic(
        "inbox/docs/broken.xml",
        "<Order>\n  <id>o-1</id>\n  <qty>2</amount>\n</Order>\n",
    );
    sluice.expect_within(secs(15), "broken.xml.error.json in .error/", || {
        sb.exists("inbox/docs/.error/broken.xml.error.json")
    });
    let message = sidecar_message(&sb, "inbox/docs/.error/broken.xml.error.json");
    assert!(
        message.contains("line 3 column 9"),
        "the sidecar names line 3, column 9 (the wrong end tag): {message}"
    );
    assert!(message.contains("</amount>"), "{message}");
    assert_eq!(sb.count("outbox/docs"), 0);
}

#[test]
fn a_doctype_is_refused_and_no_entity_is_read() {
    let sb = Sandbox::new();
    sb.write("flows/files.yaml", FILE_FLOW);
    let secret = sb.write("secret.txt", "TOP-SECRET-VALUE");
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("xml-files");
    let xxe = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE o [ <!ENTITY x SYSTEM \"file://{}\"> ]>\n<o>&x;</o>\n",
        secret.display()
    );
    sb.write_atomic("inbox/docs/xxe.xml", &xxe);
    sluice.expect_within(secs(15), "xxe.xml.error.json in .error/", || {
        sb.exists("inbox/docs/.error/xxe.xml.error.json")
    });
    let message = sidecar_message(&sb, "inbox/docs/.error/xxe.xml.error.json");
    assert!(message.contains("DOCTYPE"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert_eq!(sb.count("outbox/docs"), 0);
    assert!(!sluice.log().contains("TOP-SECRET-VALUE"));
}

#[test]
fn a_document_read_and_written_back_is_the_same_document() {
    let sb = Sandbox::new();
    sb.write("flows/files.yaml", FILE_FLOW);
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("xml-files");
    let document = "<ns:Order xmlns:ns=\"urn:o\" id=\"o-1\"><line><sku>A &amp; B</sku></line><line><sku>C</sku></line><note/></ns:Order>";
    sb.write_atomic(
        "inbox/docs/order.xml",
        format!("<?xml version=\"1.0\"?>\n{document}\n"),
    );
    sluice.expect_within(secs(15), "outbox/docs/order.xml", || {
        sb.exists("outbox/docs/order.xml")
    });
    let written = std::fs::read_to_string(sb.path("outbox/docs/order.xml")).unwrap();
    assert!(written.contains(document), "{written}");
}

const HTTP_FLOW: &str = r#"name: xml-http
trigger:
  http: { path: /orders, xml: { arrays: [line] } }
steps:
  - set: { received: "'yes'" }
  - reply: { format: xml, root: Answer }
"#;

const JSON_IN_XML_OUT: &str = r#"name: json-to-xml
trigger:
  http: { path: /convert }
steps:
  - reply: { format: xml }
"#;

const XML_IN_JSON_OUT: &str = r#"name: xml-to-json
trigger:
  http: { path: /echo }
steps:
  - log: "echo"
"#;

#[test]
fn http_takes_xml_and_answers_xml() {
    let sb = Sandbox::new();
    sb.write("flows/http.yaml", HTTP_FLOW);
    sb.write("flows/convert.yaml", JSON_IN_XML_OUT);
    sb.write("flows/echo.yaml", XML_IN_JSON_OUT);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("xml-http");
    sluice.wait_ready("json-to-xml");
    sluice.wait_ready("xml-to-json");

    for content_type in ["application/xml", "text/xml; charset=utf-8"] {
        let r = http(
            ports.listen,
            "POST",
            "/orders",
            &[("Content-Type", content_type)],
            Some(b"<Order id=\"o-1\"><line><sku>A</sku></line></Order>"),
        );
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.header("content-type"), Some("application/xml"), "{r}");
        let text = r.text();
        assert!(
            text.contains("<Answer><Order id=\"o-1\"><line><sku>A</sku></line></Order><received>yes</received></Answer>"),
            "{text}"
        );
    }

    // A DTD in a request is refused before the flow sees it.
    let r = http(
        ports.listen,
        "POST",
        "/orders",
        &[("Content-Type", "application/xml")],
        Some(b"<!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><a>&x;</a>"),
    );
    assert_eq!(r.status, 400, "{r}");
    assert!(r.text().contains("DOCTYPE"), "{r}");
    let r = http(
        ports.listen,
        "POST",
        "/orders",
        &[("Content-Type", "application/xml")],
        Some(b"<a><b></a>"),
    );
    assert_eq!(r.status, 400, "{r}");
    assert!(r.text().contains("line 1 column"), "{r}");

    // JSON in the convention's form → XML → JSON gives the same JSON.
    let original = json!({ "Order": {
        "@id": "o-9",
        "line": [ { "sku": "A", "qty": "2" }, { "sku": "B", "qty": "1" } ],
        "note": "x < y & z",
    }});
    let r = post_json(ports.listen, "/convert", &[], &original);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("content-type"), Some("application/xml"));
    let back = http(
        ports.listen,
        "POST",
        "/echo",
        &[("Content-Type", "application/xml")],
        Some(&r.body),
    );
    assert_eq!(back.status, 200, "{back}");
    assert_eq!(
        back.json(),
        original,
        "JSON → XML → JSON through the binary"
    );

    // A payload with no XML form fails the message (500), not its answer.
    let r = post_json(ports.listen, "/convert", &[], &json!({ "a": 1, "b": 2 }));
    assert_eq!(r.status, 500, "{r}");
    assert_eq!(r.json()["error"]["kind"], "transform", "{r}");
    sluice.wait_for_log("the reply has no XML form", secs(10));
}
