//! The convention, both ways, and the refusals.

use serde_json::json;
use sluice_xml::{ReadOptions, RecordPath, Records, count_records, to_json, to_xml};

fn read(xml: &str) -> serde_json::Value {
    to_json(xml.as_bytes(), &ReadOptions::default()).unwrap()
}

fn refusal(xml: &str) -> sluice_xml::XmlError {
    to_json(xml.as_bytes(), &ReadOptions::default()).unwrap_err()
}

#[test]
fn elements_attributes_text_and_repeats() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- an order -->
<ns:Order xmlns:ns="urn:orders" id="o-1">
  <customer tier="gold">c-7</customer>
  <line><sku>A1</sku><qty>2</qty></line>
  <line><sku>B2</sku><qty>1</qty></line>
  <note><![CDATA[fragile & <heavy>]]></note>
  <empty/>
  <price currency="EUR"> 9.50 </price>
  <text>a &amp; b &#x41;&lt;</text>
</ns:Order>"#;
    assert_eq!(
        read(xml),
        json!({ "ns:Order": {
            "@xmlns:ns": "urn:orders",
            "@id": "o-1",
            "customer": { "@tier": "gold", "#text": "c-7" },
            "line": [ { "sku": "A1", "qty": "2" }, { "sku": "B2", "qty": "1" } ],
            "note": "fragile & <heavy>",
            "empty": "",
            "price": { "@currency": "EUR", "#text": " 9.50 " },
            "text": "a & b A<",
        }})
    );
}

#[test]
fn listed_names_are_always_arrays() {
    let options = ReadOptions {
        arrays: vec!["line".into()],
        ..ReadOptions::default()
    };
    let value = to_json(b"<o><line>1</line></o>", &options).unwrap();
    assert_eq!(value, json!({ "o": { "line": ["1"] } }));
}

#[test]
fn json_to_xml_to_json_is_equal() {
    let value = json!({ "Order": {
        "@id": "o-1",
        "@xmlns:x": "urn:x",
        "customer": { "@tier": "gold", "#text": "c-7 & co <ltd>" },
        "line": [ { "sku": "A1", "qty": "2" }, { "sku": "B2", "qty": "1" } ],
        "x:note": "quote \" and apostrophe '",
        "empty": "",
    }});
    let xml = to_xml(&value, None).unwrap();
    assert_eq!(to_json(&xml, &ReadOptions::default()).unwrap(), value);
}

#[test]
fn xml_to_json_to_xml_keeps_the_document() {
    let xml = "<a x=\"1\"><b>t</b><b>u</b><c/></a>";
    let once = to_xml(&read(xml), None).unwrap();
    let text = String::from_utf8(once.clone()).unwrap();
    assert!(text.contains(xml), "{text}");
    assert_eq!(to_json(&once, &ReadOptions::default()).unwrap(), read(xml));
}

#[test]
fn a_root_name_wraps_the_payload_and_scalars_become_text() {
    let xml = to_xml(&json!({ "qty": 2, "ok": true, "gone": null }), Some("Line")).unwrap();
    let text = String::from_utf8(xml).unwrap();
    assert!(
        text.contains("<Line><qty>2</qty><ok>true</ok><gone/></Line>"),
        "{text}"
    );
}

#[test]
fn payloads_without_an_xml_form_are_refused_with_where() {
    let e = to_xml(&json!({ "a": 1, "b": 2 }), None).unwrap_err();
    assert!(e.reason.contains("one key"), "{e}");
    let e = to_xml(&json!({ "a": { "bad name": "x" } }), None).unwrap_err();
    assert_eq!(e.path, "/a/bad name");
    let e = to_xml(&json!({ "a": { "b": [[1]] } }), None).unwrap_err();
    assert!(e.reason.contains("array inside an array"), "{e}");
    let e = to_xml(&json!({ "a": { "@x": null } }), None).unwrap_err();
    assert!(e.reason.contains("null"), "{e}");
}

#[test]
fn a_doctype_is_refused_so_no_entity_is_ever_expanded() {
    let xxe = r#"<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<foo>&xxe;</foo>"#;
    let e = refusal(xxe);
    assert!(e.reason.contains("DOCTYPE"), "{e}");
    assert_eq!(e.line, 2);
    let laughs = r#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><lolz>&lol2;</lolz>"#;
    assert!(refusal(laughs).reason.contains("DOCTYPE"));
    // Without a DOCTYPE, an entity is simply undefined.
    let e = refusal("<a>&xxe;</a>");
    assert!(e.reason.contains("`&xxe;` is not defined"), "{e}");
    let e = refusal("<a b=\"&xxe;\"/>");
    assert!(e.reason.contains("refused"), "{e}");
}

#[test]
fn malformed_documents_name_line_and_column() {
    let e = refusal("<a>\n  <b>x</c>\n</a>");
    assert_eq!((e.line, e.column), (2, 7), "{e}");
    let e = refusal("<a><b></b>");
    assert!(e.reason.contains("ends inside"), "{e}");
    let e = refusal("<a/><b/>");
    assert!(e.reason.contains("second root"), "{e}");
    let e = refusal("hello <a/>");
    assert!(e.reason.contains("outside the root"), "{e}");
    let e = refusal("");
    assert!(e.reason.contains("no element"), "{e}");
    let e = refusal("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>");
    assert!(e.reason.contains("UTF-8 only"), "{e}");
    assert!(to_json(b"<a>\xff</a>", &ReadOptions::default()).is_err());
}

#[test]
fn nesting_is_limited() {
    let deep = format!("{}{}", "<a>".repeat(200), "</a>".repeat(200));
    assert!(refusal(&deep).reason.contains("deeper than 128"));
    let fine = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
    read(&fine);
}

#[test]
fn records_come_one_at_a_time_with_their_lines() {
    let xml = "<Orders>\n  <Order id=\"1\"><qty>2</qty></Order>\n  <Other/>\n  <Order\n    id=\"2\"/>\n  <Order>three</Order>\n</Orders>\n";
    let path = RecordPath::parse("/Orders/Order").unwrap();
    let records: Vec<_> = Records::new(xml.as_bytes(), path.clone(), ReadOptions::default())
        .collect::<Result<_, _>>()
        .unwrap();
    let values: Vec<_> = records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(
        values,
        vec![
            json!({ "@id": "1", "qty": "2" }),
            json!({ "@id": "2" }),
            json!("three")
        ]
    );
    let lines: Vec<_> = records.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![2, 4, 6]);
    assert_eq!(
        count_records(xml.as_bytes(), path, ReadOptions::default()).unwrap(),
        3
    );
}

#[test]
fn a_malformed_document_fails_the_count_before_any_record() {
    let xml = "<Orders>\n<Order/>\n<Order>\n</Orders>";
    let path = RecordPath::parse("/Orders/Order").unwrap();
    let e = count_records(xml.as_bytes(), path, ReadOptions::default()).unwrap_err();
    assert_eq!(e.line, 4, "{e}");
}

#[test]
fn record_paths_are_checked() {
    assert!(
        RecordPath::parse("Orders/Order")
            .unwrap_err()
            .contains("start with `/`")
    );
    assert!(RecordPath::parse("/Orders//Order").is_err());
    assert!(RecordPath::parse("/1x").is_err());
    assert_eq!(RecordPath::parse("/a:b/c").unwrap().to_string(), "/a:b/c");
}

#[test]
fn characters_a_reader_would_normalize_survive_a_round_trip() {
    let value = json!({ "a": { "@v": "x\ny\tz\r", "#text": "line\r\nnext" } });
    let xml = to_xml(&value, None).unwrap();
    assert_eq!(to_json(&xml, &ReadOptions::default()).unwrap(), value);
    let read = read("<a v=\"x&#10;y\">p&#13;q</a>");
    let again = to_json(&to_xml(&read, None).unwrap(), &ReadOptions::default()).unwrap();
    assert_eq!(again, read);
}

#[test]
fn names_that_cannot_be_written_back_are_refused() {
    assert!(refusal("<1a/>").reason.contains("element name"));
    assert!(refusal("<a 1b=\"x\"/>").reason.contains("attribute name"));
}
