//! Ending a message on purpose: the `stop` step, a `reply` inside `catch`, and `enrich`
//! failures answered as 502 (kind `enrich`, with the upstream status) rather than a `sink` 500.

use crate::support::*;

const QUOTE_FLOW: &str = r#"name: quote
trigger:
  http: { path: "/quotes/{sku}", method: POST }
steps:
  - try:
      - enrich:
          url: "@URL@/prices/{{sku}}"
          into: price
  - catch:
      - set: { failed: "meta('error.kind')", upstream: "meta('error.message')" }
      - reply: { status: 502, headers: { x-quote: "unavailable" } }
  # Only the good path gets here: the reply in `catch` ended the failed message.
  - set: { priced: "`true`" }
  - to: quotes
sinks:
  quotes:
    file: { path: out/quotes, name: "{{sku}}.json" }
errors:
  retry: { attempts: 1 }
"#;

const STOP_FLOW: &str = r#"name: stopper
trigger:
  http: { path: /stop, method: POST }
steps:
  - to: audit
  - route:
      - when: "kind == 'spam'"
        steps:
          - stop: filtered
      - when: "kind == 'done'"
        steps:
          - set: { early: "`true`" }
          - stop: completed
  - set: { late: "`true`" }
  - to: main
sinks:
  audit:
    file: { path: out/audit, name: "{{id}}.json" }
  main:
    file: { path: out/main, name: "{{id}}.json" }
"#;

const BARE_ENRICH_FLOW: &str = r#"name: bare-enrich
trigger:
  http: { path: "/bare/{sku}", method: POST }
steps:
  - enrich:
      url: "@URL@/prices/{{sku}}"
      into: price
errors:
  retry: { attempts: 1 }
"#;

#[test]
fn a_reply_in_catch_ends_the_message_and_stop_ends_it_on_purpose() {
    let server = TestServer::start(|_, r| {
        if r.target == "/prices/KETTLE-1" {
            Answer::json(200, &json!({ "cents": 2599 }))
        } else {
            Answer::json(404, &json!({ "error": "no such sku" }))
        }
    });
    let sb = Sandbox::new();
    sb.write(
        "flows/quote.yaml",
        QUOTE_FLOW.replace("@URL@", &server.url("")),
    );
    sb.write("flows/stopper.yaml", STOP_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("quote");
    sluice.wait_ready("stopper");
    sluice.wait_listener(ports);
    let addr = ports.listen;

    // The good path runs past the try/catch to the sink.
    let r = post_json(addr, "/quotes/KETTLE-1", &[], &json!({ "sku": "KETTLE-1" }));
    assert_eq!(r.status, 200, "{r}\n{}", sluice.log_tail(20));
    assert_eq!(r.json()["priced"], true, "{r}");
    assert_eq!(r.json()["price"], json!({ "cents": 2599 }), "{r}");
    sluice.expect_within(secs(10), "the quote file", || {
        sb.exists("out/quotes/KETTLE-1.json")
    });

    // The failed enrich is caught; the reply answers 502 and the message ends there: the
    // steps after `catch` do not run and nothing reaches the sink.
    let r = post_json(addr, "/quotes/NOPE-9", &[], &json!({ "sku": "NOPE-9" }));
    assert_eq!(r.status, 502, "{r}\n{}", sluice.log_tail(20));
    assert_eq!(r.header("x-quote"), Some("unavailable"), "{r}");
    let body = r.json();
    assert_eq!(body["failed"], "enrich", "the caught error's kind: {body}");
    assert!(
        body.get("priced").is_none(),
        "steps after catch ran: {body}"
    );
    assert_eq!(sb.count("out/quotes"), 1, "{:?}", sb.names("out/quotes"));

    // `stop: filtered`: nothing is delivered (not even what `to` recorded), 204.
    let r = post_json(addr, "/stop", &[], &json!({ "id": "s-1", "kind": "spam" }));
    assert_eq!(r.status, 204, "{r}");
    // `stop: completed` inside a route arm: what was recorded is delivered, the steps after
    // the route do not run, and the caller gets the payload as it was.
    let r = post_json(addr, "/stop", &[], &json!({ "id": "d-1", "kind": "done" }));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json(),
        json!({ "id": "d-1", "kind": "done", "early": true })
    );
    // No stop: every step runs.
    let r = post_json(
        addr,
        "/stop",
        &[],
        &json!({ "id": "n-1", "kind": "normal" }),
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["late"], true, "{r}");
    sluice.expect_within(secs(10), "the main delivery of n-1", || {
        sb.exists("out/main/n-1.json")
    });
    assert_eq!(
        sb.names("out/audit"),
        ["d-1.json", "n-1.json"].map(String::from).into(),
        "the filtered message delivered nothing"
    );
    assert_eq!(
        sb.names("out/main"),
        ["n-1.json"].map(String::from).into(),
        "the stopped message skipped the later `to`"
    );
    let flow = admin_flow(ports, "stopper");
    assert_eq!(flow["counters"]["filtered"], 1, "{flow:#}");
    sluice.assert_running();
}

#[test]
fn a_failed_enrich_is_a_502_of_kind_enrich_with_the_upstream_status() {
    let server = TestServer::start(|_, r| {
        if r.target.starts_with("/prices/GONE") {
            Answer::json(404, &json!({ "error": "no such sku" }))
        } else {
            Answer::json(200, &json!({ "cents": 1 }))
        }
    });
    let closed = free_port();
    let sb = Sandbox::new();
    sb.write(
        "flows/bare-enrich.yaml",
        BARE_ENRICH_FLOW.replace("@URL@", &server.url("")),
    );
    sb.write(
        "flows/down-enrich.yaml",
        BARE_ENRICH_FLOW
            .replace("name: bare-enrich", "name: down-enrich")
            .replace("/bare/", "/down/")
            .replace("@URL@", &format!("http://127.0.0.1:{closed}")),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("bare-enrich");
    sluice.wait_ready("down-enrich");
    sluice.wait_listener(ports);

    let r = post_json(
        ports.listen,
        "/bare/GONE-1",
        &[],
        &json!({ "sku": "GONE-1" }),
    );
    assert_eq!(r.status, 502, "{r}\n{}", sluice.log_tail(20));
    let error = &r.json()["error"];
    assert_eq!(error["kind"], "enrich", "{r}");
    assert_eq!(error["upstream_status"], 404, "{r}");
    assert_eq!(error["message"], "an upstream service answered 404", "{r}");

    // Nothing listens: still `enrich` and 502, without an upstream status.
    let r = post_json(ports.listen, "/down/X-1", &[], &json!({ "sku": "X-1" }));
    assert_eq!(r.status, 502, "{r}\n{}", sluice.log_tail(20));
    let error = &r.json()["error"];
    assert_eq!(error["kind"], "enrich", "{r}");
    assert!(error.get("upstream_status").is_none(), "{r}");
    assert_eq!(
        error["message"], "an upstream service could not be reached",
        "{r}"
    );
    sluice.assert_running();
}

#[test]
fn stop_takes_only_completed_or_filtered() {
    let sb = Sandbox::new();
    let flow = "name: bad-stop\ntrigger:\n  http: { path: /x }\nsteps:\n  - stop: halted\n";
    sb.write("flows/bad-stop.yaml", flow);
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let text = out.all();
    assert!(
        text.contains("bad-stop.yaml:5:"),
        "names the position: {text}"
    );
    assert!(
        text.contains("completed") && text.contains("filtered"),
        "names the outcomes: {text}"
    );
}
