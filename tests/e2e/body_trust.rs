//! One parse decides what a body is, and numbers pass through exactly: a JSON body nested
//! past the limit, with a number out of range or with invalid UTF-8 inside a string is an
//! error with the reason (HTTP 400/422, a broker's dead letter with the body as it arrived),
//! never a `null`; integers past 64 bits come out exactly as they came in, through steps that
//! do not change them, and a script that must compute with one says which field it is.

use crate::support::*;
use async_nats::jetstream::{self, stream};
use serde_json::Value;
use std::time::Duration;

const NATS_PORT: u16 = 4222;

/// `depth` nested arrays around `0` inside `{"doc": …}`.
fn nested(depth: usize) -> String {
    format!(
        "{{\"doc\":{}0{}}}",
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

const BIG: &str = "12345678901234567890123";

/// A body with integers past i64 and u64, a u64 past i64, and a float with more digits than
/// an f64 holds.
fn big_body() -> String {
    format!(
        r#"{{"id":{BIG},"u":18446744073709551615,"neg":-98765432109876543210,"fine":0.1000000000000000000001,"n":[1,{BIG}9]}}"#
    )
}

/// Two HTTP flows: `echo` answers with the payload (no steps, no sinks), `keep` hands it to a
/// script and writes it to `outbox/`.
fn serve_refusal_flows(sb: &Sandbox) -> (Sluice, Ports) {
    sb.write(
        "flows/echo.yaml",
        "name: echo\ntrigger:\n  http: { path: /echo, method: POST }\n",
    );
    sb.write(
        "flows/keep.yaml",
        r#"name: keep
trigger:
  http: { path: /keep, method: POST }
steps:
  - script: "payload"
  - to: out
sinks:
  out:
    file: { path: outbox, name: "{{meta('message_id')}}.json" }
"#,
    );
    let (mut sluice, ports) = Sluice::serve(sb, &[], &[]);
    sluice.wait_listener(ports);
    sluice.wait_ready("echo");
    sluice.wait_ready("keep");
    (sluice, ports)
}

fn post_raw(ports: Ports, path: &str, body: &[u8]) -> HttpResponse {
    http(
        ports.listen,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body),
    )
}

/// Checks a refusal: the status, a JSON error of kind `trigger` whose message contains `why`.
fn assert_refused(r: &HttpResponse, status: u16, why: &str) {
    assert_eq!(r.status, status, "{r}");
    let body = r.json();
    assert_eq!(body["error"]["kind"], "trigger", "{r}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "the error says why ({why}):\n{r}");
}

#[test]
fn http_bodies_the_parse_refuses_are_errors_never_null() {
    let sb = Sandbox::new();
    let (mut sluice, ports) = serve_refusal_flows(&sb);
    let bad: [(&str, Vec<u8>, u16, &str); 4] = [
        (
            "200 levels",
            nested(200).into_bytes(),
            422,
            "deeper than 127 levels",
        ),
        // serde_json writes the number's exponent in its own form in the message.
        ("1e400", br#"{"n":1e400}"#.to_vec(), 422, "1e+400 at /n"),
        (
            "-1e400 deep inside",
            br#"{"a":[{"b":-1e400}]}"#.to_vec(),
            422,
            "at /a/0/b",
        ),
        (
            "invalid UTF-8",
            b"{\"s\":\"caf\xe9\"}".to_vec(),
            400,
            "the body is not JSON",
        ),
    ];
    for (what, body, status, why) in &bad {
        for path in ["/echo", "/keep"] {
            let r = post_raw(ports, path, body);
            assert_refused(&r, *status, why);
            assert!(r.json().get("doc").is_none(), "{what} on {path}: {r}");
        }
    }
    // Bodies just inside the limits are taken, and come back as they were sent.
    let edge = nested(127);
    let r = post_raw(ports, "/echo", edge.as_bytes());
    assert_eq!(r.status, 200, "127 levels are within the limit: {r}");
    assert_eq!(r.text(), edge);
    let r = post_raw(ports, "/keep", br#"{"n":1e308,"tiny":1e-400}"#);
    assert_eq!(r.status, 200, "{r}");
    sluice.expect_within(secs(10), "the accepted body in outbox/", || {
        sb.count("outbox") == 1
    });
    // Nothing refused was written (as null or otherwise): only the accepted body.
    let written = sb.only_json("outbox");
    assert_eq!(written["n"].as_f64(), Some(1e308), "{written}");
    assert_eq!(
        written["tiny"].as_f64(),
        Some(0.0),
        "a script sees 1e-400 as 0.0"
    );
}

#[test]
fn big_integers_pass_through_steps_that_do_not_change_them() {
    let sb = Sandbox::new();
    sb.write(
        "schemas/big.v1.json",
        r#"{"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}"#,
    );
    // `raw` has no step: a body with whitespace is written compact, numbers untouched.
    sb.write(
        "flows/raw.yaml",
        "name: raw\ntrigger:\n  http: { path: /raw, method: POST }\nsteps:\n  - to: out\n\
         sinks:\n  out:\n    file: { path: outbox/raw, name: \"{{id}}.json\" }\n",
    );
    // `shaped` checks a contract and changes other fields with JMESPath and a script.
    sb.write(
        "flows/shaped.yaml",
        r#"name: shaped
trigger:
  http: { path: /shaped, method: POST }
contract:
  input: big.v1
steps:
  - set:
      seen: "`true`"
      first: "n[0]"
  - transform: "{id: id, u: u, neg: neg, fine: fine, n: n, seen: seen, first: first, same: id == id}"
  - script: |
      payload.tag = "scripted";
      payload.label = "id " + payload.id.to_string();
      payload
  - filter: "seen"
  - to: out
sinks:
  out:
    file: { path: outbox/shaped, name: "{{id}}.json" }
"#,
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_listener(ports);
    sluice.wait_ready("raw");
    sluice.wait_ready("shaped");

    let pretty = big_body().replace(',', ", ").replace(':', ": ");
    let r = post_raw(ports, "/raw", pretty.as_bytes());
    assert_eq!(r.status, 200, "{r}");
    let raw_file = format!("outbox/raw/{BIG}.json");
    sluice.expect_within(secs(10), "the raw output", || sb.exists(&raw_file));
    let written = std::fs::read(sb.path(&raw_file)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&written),
        big_body(),
        "written byte for byte (compact)"
    );

    let r = post_raw(ports, "/shaped", big_body().as_bytes());
    assert_eq!(r.status, 200, "{r}");
    let shaped_file = format!("outbox/shaped/{BIG}.json");
    sluice.expect_within(secs(10), "the shaped output", || sb.exists(&shaped_file));
    let text = std::fs::read_to_string(sb.path(&shaped_file)).unwrap();
    let out: Value = serde_json::from_str(&text).unwrap();
    // serde_json is built with `arbitrary_precision` here too: numbers compare by their text.
    for (field, exact) in [
        ("id", BIG.to_owned()),
        ("u", "18446744073709551615".to_owned()),
        ("neg", "-98765432109876543210".to_owned()),
        ("n", format!("[1,{BIG}9]")),
        ("first", "1".to_owned()),
    ] {
        assert_eq!(out[field].to_string(), exact, "{field} in {text}");
    }
    assert_eq!(out["seen"], true, "{text}");
    assert_eq!(out["same"], true, "{text}");
    assert_eq!(out["tag"], "scripted", "{text}");
    assert_eq!(out["label"], format!("id {BIG}"), "{text}");
    // The float went through a script, which holds it as an f64 (documented).
    assert_eq!(out["fine"].to_string(), "0.1", "{text}");
}

#[test]
fn a_script_that_computes_with_a_big_integer_names_the_field() {
    let sb = Sandbox::new();
    sb.write(
        "flows/sum.yaml",
        r#"name: sum
trigger:
  http: { path: /sum, method: POST }
steps:
  - script: |
      payload.next = payload.order.id + 1;
      payload
"#,
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_listener(ports);
    sluice.wait_ready("sum");
    let body = format!(r#"{{"order":{{"id":{BIG}}}}}"#);
    let r = post_raw(ports, "/sum", body.as_bytes());
    assert_eq!(r.status, 500, "{r}");
    assert_eq!(r.json()["error"]["kind"], "script", "{r}");
    let line = sluice.wait_for_line("the script error naming the field", secs(10), |l| {
        l.contains("message failed") && has_flow(l, "sum")
    });
    assert!(
        line.contains(BIG) && line.contains("/order/id") && line.contains("to_float"),
        "the error names the number, its field and the way out: {line}"
    );
    // Within i64 the same script computes.
    let r = post_raw(ports, "/sum", br#"{"order":{"id":41}}"#);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["next"], 42, "{r}");
}

/// Publishes `body` as it is to `subject` with `Nats-Msg-Id: id`, retrying until JetStream
/// acknowledges it (bounded).
fn publish(
    rt: &tokio::runtime::Runtime,
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    body: &[u8],
) {
    rt.block_on(async {
        for _ in 0..200 {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id);
            let sent = js
                .publish_with_headers(subject.to_owned(), headers, body.to_vec().into())
                .await;
            if let Ok(ack) = sent
                && ack.await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not publish {id} to {subject}");
    });
}

#[test]
fn nats_bodies_the_parse_refuses_reach_the_dead_letter_as_they_arrived() {
    if !service_available("NATS JetStream", NATS_PORT) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let js = rt.block_on(async {
        let client = async_nats::connect(format!("nats://127.0.0.1:{NATS_PORT}"))
            .await
            .expect("connect to NATS");
        jetstream::new(client)
    });
    let u = unique_name("body");
    let in_stream = format!("IN_{u}");
    rt.block_on(async {
        js.get_or_create_stream(stream::Config {
            name: in_stream.clone(),
            subjects: vec![format!("{u}.in")],
            ..Default::default()
        })
        .await
        .expect("create stream");
    });
    let sb = Sandbox::new();
    sb.write(
        "flows/nb.yaml",
        format!(
            r#"name: nb
trigger:
  nats: {{ stream: {in_stream}, subject: "{u}.in", durable: worker, ack_wait: 1s, nak_delay: 300ms }}
steps:
  - script: "payload"
  - to: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{meta('message_id')}}}}.json" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("nats consumer ready", secs(30));
    let deep = nested(200);
    let huge = r#"{"n": 1e400}"#;
    publish(&rt, &js, &format!("{u}.in"), "deep-1", deep.as_bytes());
    publish(&rt, &js, &format!("{u}.in"), "huge-1", huge.as_bytes());
    publish(&rt, &js, &format!("{u}.in"), "big-1", big_body().as_bytes());
    sluice.expect_within(secs(30), "two dead letters and one output", || {
        sb.count("dead-letter") == 2 && sb.count("outbox") == 1
    });
    let mut letters: Vec<Value> = sb
        .names("dead-letter")
        .iter()
        .map(|name| sb.read_json(&format!("dead-letter/{name}")))
        .collect();
    letters.sort_by_key(|l| {
        l["meta"]["message_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    for (letter, body, why) in [
        (&letters[0], deep.as_str(), "deeper than 127 levels"),
        (&letters[1], huge, "1e+400 at /n"),
    ] {
        assert_eq!(
            letter["message"], body,
            "the body as it arrived: {letter:#}"
        );
        assert_eq!(letter["error"]["kind"], "trigger", "{letter:#}");
        let message = letter["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{letter:#}");
    }
    assert_eq!(letters[0]["meta"]["message_id"], "deep-1");
    assert_eq!(letters[1]["meta"]["message_id"], "huge-1");
    let out =
        std::fs::read_to_string(sb.path("outbox/big-1.json")).expect("the big-integer output");
    let (got, sent): (Value, Value) = (
        serde_json::from_str(&out).unwrap(),
        serde_json::from_str(&big_body()).unwrap(),
    );
    assert_eq!(got["id"].to_string(), BIG, "{out}");
    assert_eq!(got["u"], sent["u"], "{out}");
    assert_eq!(got["n"], sent["n"], "{out}");
    rt.block_on(async {
        let _ = js.delete_stream(&in_stream).await;
    });
}
