//! `tests:` and `sluice exec` never touch the world: `enrich` and `call` steps and sinks
//! answer from `mocks:`, what was sent to them is asserted with `expect.sent`, an unmocked
//! `enrich` says how to mock it, `exec --live` opts in to real calls; start-up tests do not
//! count in the production metrics nor log a failure for a flow that then starts. And the
//! richer `expect`: status and headers of a `reply`, an error with its pointer, a filtered
//! message, several deliveries (multicast, split children).

use crate::support::*;
use serde_json::json;

/// A quote flow whose `enrich` calls `url`.
fn quote_flow(url: &str, tests: &str) -> String {
    format!(
        r#"name: quotes
trigger:
  http: {{ path: "/quotes/{{sku}}", method: POST }}
steps:
  - transform: "{{sku: meta('http.path.sku'), qty: qty}}"
  - name: price-lookup
    enrich:
      url: "{url}/prices/{{{{sku}}}}"
      method: POST
      body: "{{sku: sku, qty: qty}}"
      into: price
      timeout: 500ms
  - to: crm
sinks:
  crm: {{ http: {{ url: "{url}/crm" }} }}
tests:
{tests}"#
    )
}

#[test]
fn tests_answer_enrich_from_mocks_and_never_call_the_endpoint() {
    let server = TestServer::start(|_, _| Answer::json(200, &json!({"amount": 1})));
    let sb = Sandbox::new();
    sb.write(
        "flows/quotes.yaml",
        quote_flow(
            &server.url(""),
            r#"  - name: priced from the mock
    input: { qty: 3 }
    meta: { http.path.sku: KETTLE-1 }
    mocks:
      price-lookup: { body: { amount: 9.5, currency: EUR } }
    expect:
      sink: crm
      payload: { sku: KETTLE-1, price: { amount: 9.5 } }
      sent:
        - { sink: price-lookup, payload: { sku: KETTLE-1, qty: 3 }, count: 1 }
        - { sink: crm, payload: { price: { currency: EUR } }, count: 1 }
  - name: a slow price service times out
    input: { qty: 1 }
    meta: { http.path.sku: KETTLE-2 }
    mocks:
      price-lookup: { delay: 2s }
    expect: { error: timeout }
  - name: a failing price service
    input: { qty: 1 }
    meta: { http.path.sku: KETTLE-3 }
    mocks:
      price-lookup: { status: 503 }
    expect: { error: { kind: enrich, message: "answered 503" } }
  - name: the crm is down
    input: { qty: 1 }
    meta: { http.path.sku: KETTLE-4 }
    mocks:
      price-lookup: { body: { amount: 2 } }
      crm: { error: sink }
    expect: { error: sink }
"#,
        ),
    );
    let out = sb.cli(&["test", "quotes"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("test result: 4 passed, 0 failed"),
        "{}",
        out.all()
    );
    assert_eq!(
        server.count(),
        0,
        "a test reached the endpoint: {:?}",
        server.requests()
    );
}

#[test]
fn an_unmocked_enrich_fails_the_test_and_says_how_to_mock_it() {
    let server = TestServer::start(|_, _| Answer::json(200, &json!({"amount": 1})));
    let sb = Sandbox::new();
    sb.write(
        "flows/quotes.yaml",
        quote_flow(
            &server.url(""),
            r#"  - name: forgot the mock
    input: { qty: 3 }
    meta: { http.path.sku: KETTLE-1 }
    expect: { sink: crm }
"#,
        ),
    );
    let out = sb.cli(&["test", "quotes"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout
            .contains("the `enrich` step `price-lookup` would reach the outside world")
            && out
                .stdout
                .contains("mocks: { price-lookup: { body: {...}, status: 200 } }"),
        "{}",
        out.all()
    );
    // A mock of something the flow does not have is a load error with its position.
    sb.write(
        "flows/quotes.yaml",
        quote_flow(
            &server.url(""),
            r#"  - name: wrong mock
    input: { qty: 3 }
    mocks:
      price-lookpu: { body: {} }
    expect: { sink: crm }
"#,
        ),
    );
    let out = sb.cli(&["check", "quotes"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("`mocks` names `price-lookpu`")
            && out.stderr.contains("did you mean `price-lookup`?"),
        "{}",
        out.all()
    );
    assert_eq!(server.count(), 0);
}

#[test]
fn exec_mocks_from_a_file_and_calls_for_real_only_with_live() {
    let server = TestServer::start(|_, _| Answer::json(200, &json!({"amount": 4.25})));
    let sb = Sandbox::new();
    sb.write(
        "flows/quotes.yaml",
        quote_flow(&server.url(""), "  []\n").replace("tests:\n  []\n", ""),
    );
    sb.write("in.json", r#"{"qty": 2}"#);
    let args = [
        "exec",
        "quotes",
        "-i",
        "in.json",
        "--http-path",
        "/quotes/MUG-7",
    ];
    // No mock: an error that says how to mock it, and nothing sent.
    let out = sb.cli(&args, None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let result = out.stdout_json();
    assert!(
        result["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--mocks FILE") && m.contains("--live")),
        "{result:#}"
    );
    assert_eq!(server.count(), 0);
    // A mocks file.
    sb.write("mocks.yaml", "price-lookup: { body: { amount: 1.5 } }\n");
    let mut mocked = args.to_vec();
    mocked.extend(["--mocks", "mocks.yaml"]);
    let out = sb.cli(&mocked, None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let result = out.stdout_json();
    assert_eq!(
        result["payload"]["price"],
        json!({"amount": 1.5}),
        "{result:#}"
    );
    assert_eq!(
        result["sent"],
        json!([{"to": "price-lookup", "payload": {"sku": "MUG-7", "qty": 2}}])
    );
    assert_eq!(server.count(), 0);
    // --live: the real endpoint answers; the sink is still not written.
    let mut live = args.to_vec();
    live.push("--live");
    let out = sb.cli(&live, None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        out.stdout_json()["payload"]["price"],
        json!({"amount": 4.25})
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].target, "/prices/MUG-7");
}

#[test]
fn a_mocked_call_replaces_the_called_flow_and_a_called_flows_sinks_are_reported() {
    let sb = Sandbox::new();
    sb.write(
        "flows/ledger.yaml",
        r#"name: ledger
trigger:
  channel: { name: ledger }
steps:
  - set: { booked: "`true`" }
  - to: book
sinks:
  book: { file: { path: outbox/ledger } }
"#,
    );
    sb.write(
        "flows/pay.yaml",
        r#"name: pay
trigger:
  file: { path: inbox/pay }
steps:
  - name: book-it
    call: ledger
tests:
  - name: the ledger is mocked
    input: { id: p-1 }
    mocks:
      book-it: { body: { id: p-1, booked: "mocked" } }
    expect:
      payload: { booked: mocked }
      sent: { sink: book-it, payload: { id: p-1 }, count: 1 }
  - name: the ledger runs dry and its sink is only noted
    input: { id: p-2 }
    expect:
      payload: { booked: true }
      sent: { sink: ledger/book, payload: { id: p-2, booked: true }, count: 1 }
"#,
    );
    let out = sb.cli(&["test", "pay"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("2 passed, 0 failed"), "{}", out.all());
    assert!(
        !sb.exists("outbox/ledger"),
        "a test wrote the called flow's sink"
    );
}

#[test]
fn expect_checks_reply_status_and_headers_errors_filtering_and_every_delivery() {
    let sb = Sandbox::new();
    sb.write(
        "schemas/order.v1.json",
        r#"{"type": "object", "required": ["lines"], "properties": {"lines": {"type": "array",
           "items": {"type": "object", "properties": {"qty": {"type": "integer", "minimum": 1}}}}}}"#,
    );
    sb.write(
        "flows/api.yaml",
        r#"name: api
trigger:
  http: { path: /orders }
contract:
  input: order.v1
steps:
  - filter: "length(lines) > `0`"
  - to: [audit, archive]
  - reply: { status: 202, headers: { x-order: "{{id}}" } }
sinks:
  audit: { stdout: {} }
  archive: { file: { path: outbox/archive } }
tests:
  - name: accepted
    input: { id: o-1, lines: [ { qty: 1 } ] }
    expect:
      status: 202
      headers: { X-Order: o-1 }
      deliveries: [ { sink: audit, payload: { id: o-1 } }, { sink: archive } ]
  - name: a bad quantity names its field
    input: { id: o-2, lines: [ { qty: 0 } ] }
    expect: { error: { kind: contract, pointer: /lines/0/qty } }
  - name: empty orders are dropped
    input: { id: o-3, lines: [] }
    expect: { filtered: true }
"#,
    );
    sb.write(
        "flows/lines.yaml",
        r#"name: lines
trigger:
  file: { path: inbox/lines }
steps:
  - split: lines
  - to: line
sinks:
  line: { file: { path: outbox/lines } }
tests:
  - name: one delivery per line
    input: { lines: [ { sku: a }, { sku: b }, { sku: c } ] }
    expect:
      deliveries: [ { sink: line, payload: { sku: a } }, { sink: line, payload: { sku: b } },
                    { sink: line, payload: { sku: c } } ]
      sent: { sink: line, count: 3 }
"#,
    );
    let out = sb.cli(&["test"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("4 passed, 0 failed"), "{}", out.all());

    // Each expectation fails when the flow does not meet it, saying what differed.
    let wrong = [
        (
            "status: 202\n",
            "status: 201\n",
            "expected status 201, got 202",
        ),
        (
            "X-Order: o-1",
            "X-Order: o-9",
            "expected header `X-Order: o-9`, got `X-Order: o-1`",
        ),
        (
            "pointer: /lines/0/qty",
            "pointer: /lines/0/sku",
            "expected a violation at `/lines/0/sku`, got violations at /lines/0/qty",
        ),
        (
            "{ sink: archive } ]",
            "{ sink: audit } ]",
            "delivery 1: expected `audit`, got `archive`",
        ),
        (
            "filtered: true",
            "filtered: false",
            "the message was filtered",
        ),
    ];
    let original = std::fs::read_to_string(sb.path("flows/api.yaml")).unwrap();
    for (from, to, says) in wrong {
        assert!(original.contains(from), "{from}");
        sb.write("flows/api.yaml", original.replacen(from, to, 1));
        let out = sb.cli(&["test", "api"], None);
        assert_eq!(out.code, Some(1), "{to}\n{}", out.all());
        assert!(
            out.stdout.contains(says),
            "`{says}` for `{to}`:\n{}",
            out.all()
        );
    }
    let lines = std::fs::read_to_string(sb.path("flows/lines.yaml")).unwrap();
    sb.write("flows/lines.yaml", lines.replace("count: 3", "count: 2"));
    let out = sb.cli(&["test", "lines"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout.contains("expected 2 sent to `line`, got 3"),
        "{}",
        out.all()
    );
}

#[test]
fn start_up_tests_count_in_no_metric_and_log_no_false_failure() {
    let server = TestServer::start(|_, _| Answer::status(503));
    let sb = Sandbox::new();
    // `a-caller` loads before `z-priced`, which its test calls: a first attempt fails,
    // the retry after `z-priced` loaded passes, and nothing about it is an error.
    sb.write(
        "flows/a-caller.yaml",
        r#"name: a-caller
trigger:
  http: { path: /caller }
steps:
  - call: z-priced
tests:
  - name: priced through the other flow
    input: { sku: s-1 }
    mocks:
      z-priced/lookup: { body: { amount: 3 } }
    expect: { payload: { price: { amount: 3 } } }
"#,
    );
    sb.write(
        "flows/z-priced.yaml",
        format!(
            r#"name: z-priced
trigger:
  http: {{ path: /priced }}
steps:
  - name: lookup
    enrich: {{ url: "{}/prices", into: price }}
tests:
  - name: mocked
    input: {{ sku: s-1 }}
    mocks:
      lookup: {{ body: {{ amount: 3 }} }}
    expect: {{ payload: {{ price: {{ amount: 3 }} }} }}
"#,
            server.url("")
        ),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("a-caller");
    sluice.wait_ready("z-priced");
    let log = sluice.log();
    assert!(
        !log.contains("ERROR") && !log.contains("reload failed"),
        "a start-up test failure was logged for flows that started:\n{log}"
    );
    assert_eq!(server.count(), 0, "a start-up test reached the endpoint");
    let metrics = scrape(ports);
    assert_eq!(
        metrics.count("sluice_sink_retries_total", &[("flow", "z-priced")]),
        0.0
    );
    for flow in ["a-caller", "z-priced"] {
        assert_eq!(
            metrics.count("sluice_step_duration_seconds_count", &[("flow", flow)]),
            0.0,
            "the start-up tests counted as steps of `{flow}`"
        );
    }
    assert_eq!(
        metrics.count("sluice_reloads_total", &[("result", "error")]),
        0.0
    );
}
