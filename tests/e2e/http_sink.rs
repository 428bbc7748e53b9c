//! The `http` sink (retries on 5xx/429 with backoff and `Retry-After`, no retry on other 4xx,
//! dead letters) and the `enrich` step, against test servers run by the test itself.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

const PUSH_FLOW: &str = r#"name: @NAME@
trigger:
  file:
    path: inbox/@NAME@
    glob: "*.json"
    @FAST@
steps:
  - set:
      pushed: "`true`"
  - to: crm
sinks:
  crm:
    http:
      url: "@URL@/orders/{{id}}"
      method: POST
      headers: { x-api-key: "${env:CRM_KEY}", x-order: "{{id}}" }
      timeout: 5s
errors:
  retry: { attempts: 5, backoff: @BACKOFF@, max_backoff: @MAX_BACKOFF@ }
  dead_letter:
    file: { path: dead-letter/@NAME@ }
"#;

const CRM_KEY: &str = "crm-key-e2e-31337";

fn push_flow(name: &str, url: &str, backoff: &str, max_backoff: &str) -> String {
    PUSH_FLOW
        .replace("@NAME@", name)
        .replace("@URL@", url)
        .replace("@BACKOFF@", backoff)
        .replace("@MAX_BACKOFF@", max_backoff)
        .replace("@FAST@", FAST_TRIGGER)
}

/// The one file in `<sandbox>/<dir>`, as JSON.
fn only_json(sb: &Sandbox, dir: &str) -> Value {
    let names = sb.names(dir);
    assert_eq!(names.len(), 1, "exactly one file in {dir}: {names:?}");
    sb.read_json(&format!("{dir}/{}", names.iter().next().unwrap()))
}

#[test]
fn http_sink_retries_503_and_delivers_exactly_once() {
    let server = TestServer::start(|i, _| {
        if i < 2 {
            Answer::status(503)
        } else {
            Answer::status(200)
        }
    });
    let sb = Sandbox::new();
    sb.write(
        "flows/push.yaml",
        push_flow("push", &server.url(""), "100ms", "2s"),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("CRM_KEY", CRM_KEY)]);
    sluice.wait_ready("push");

    let order = json!({ "id": "o-1", "amount": 12.5 });
    sb.drop_json("inbox/push", "o-1.json", &order);
    sluice.expect_within(secs(20), "o-1.json in .done/", || {
        sb.exists("inbox/push/.done/o-1.json")
    });
    // Nothing more arrives afterwards.
    std::thread::sleep(millis(700));
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        3,
        "503, 503, then 200: three requests, no more\n{}",
        sluice.log_tail(30)
    );
    let expected = json!({ "id": "o-1", "amount": 12.5, "pushed": true });
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.method, "POST", "request {i}");
        assert_eq!(r.target, "/orders/o-1", "request {i}: URL template");
        assert_eq!(r.json(), expected, "request {i}: body");
        assert!(
            r.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "request {i}: JSON content type: {:?}",
            r.headers
        );
        assert_eq!(
            r.header("x-api-key"),
            Some(CRM_KEY),
            "request {i}: header from env"
        );
        assert_eq!(
            r.header("x-order"),
            Some("o-1"),
            "request {i}: header template"
        );
        assert!(
            r.header("x-correlation-id").is_some_and(|v| !v.is_empty()),
            "request {i}: x-correlation-id: {:?}",
            r.headers
        );
    }
    assert_eq!(
        requests[0].header("x-correlation-id"),
        requests[2].header("x-correlation-id"),
        "a retry carries the same correlation id"
    );
    // The backoff: 100 ms, then 200 ms (with a little slack for timer granularity).
    let gap1 = requests[1].at - requests[0].at;
    let gap2 = requests[2].at - requests[1].at;
    assert!(gap1 >= millis(80), "first backoff {gap1:?} >= ~100ms");
    assert!(
        gap2 >= millis(160),
        "second backoff {gap2:?} >= ~200ms (doubling)"
    );

    assert_eq!(sb.count("dead-letter/push"), 0, "nothing dead-lettered");
    assert_eq!(sb.count("inbox/push/.error"), 0);
    let m = scrape(ports);
    let retries = m.count(
        "sluice_sink_retries_total",
        &[("flow", "push"), ("sink", "crm")],
    );
    assert!(
        retries >= 2.0,
        "sluice_sink_retries_total{{flow=push,sink=crm}} = {retries}"
    );
    assert_eq!(
        m.count("sluice_messages_completed_total", &[("flow", "push")]),
        1.0,
        "one message completed"
    );
    assert_eq!(
        m.count("sluice_messages_dead_lettered_total", &[("flow", "push")]),
        0.0
    );
    sluice.assert_running();
}

#[test]
fn http_sink_400_is_not_retried_and_goes_to_the_dead_letter() {
    let server =
        TestServer::start(|_, _| Answer::json(400, &json!({ "error": "no such customer" })));
    let sb = Sandbox::new();
    sb.write(
        "flows/refused.yaml",
        push_flow("refused", &server.url(""), "50ms", "1s"),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("CRM_KEY", CRM_KEY)]);
    sluice.wait_ready("refused");

    let order = json!({ "id": "o-2", "amount": 3 });
    sb.drop_json("inbox/refused", "o-2.json", &order);
    sluice.expect_within(secs(20), "a dead letter for o-2", || {
        sb.count("dead-letter/refused") >= 1
    });
    sluice.expect_within(secs(10), "o-2.json in .error/", || {
        sb.exists("inbox/refused/.error/o-2.json")
    });
    std::thread::sleep(millis(700));
    assert_eq!(server.count(), 1, "a 400 is not retried");

    let entry = only_json(&sb, "dead-letter/refused");
    assert_eq!(entry["message"], order, "the original message: {entry:#}");
    assert_eq!(entry["error"]["kind"], "sink", "{entry:#}");
    assert_eq!(entry["error"]["upstream_status"], 400, "{entry:#}");
    assert_eq!(entry["error"]["flow"], "refused", "{entry:#}");
    assert_eq!(entry["error"]["attempts"], 1, "{entry:#}");
    assert!(
        entry["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("400")),
        "the error message names the status: {entry:#}"
    );
    let text = entry.to_string();
    assert!(
        !text.contains(CRM_KEY),
        "the API key leaks into the dead letter"
    );
    let side = sb.read_json("inbox/refused/.error/o-2.json.error.json");
    assert_eq!(side["kind"], "sink", "{side:#}");
    assert!(!sb.exists("inbox/refused/o-2.json"));

    let m = scrape(ports);
    assert_eq!(
        m.count(
            "sluice_sink_retries_total",
            &[("flow", "refused"), ("sink", "crm")]
        ),
        0.0,
        "no retries counted"
    );
    assert_eq!(
        m.count(
            "sluice_messages_failed_total",
            &[("flow", "refused"), ("kind", "sink")]
        ),
        1.0
    );
    assert_eq!(
        m.count(
            "sluice_messages_dead_lettered_total",
            &[("flow", "refused")]
        ),
        1.0
    );
    assert_eq!(
        m.count("sluice_messages_completed_total", &[("flow", "refused")]),
        0.0
    );
    assert!(
        !sluice.log().contains(CRM_KEY),
        "the API key appears in the log"
    );
    sluice.assert_running();
}

#[test]
fn http_sink_429_honours_retry_after_capped_at_max_backoff() {
    // Asks for 1 s; the backoff alone would be 50 ms.
    let polite = TestServer::start(|i, _| {
        if i == 0 {
            Answer::status(429).with_header("Retry-After", "1")
        } else {
            Answer::status(200)
        }
    });
    // Asks for 30 s; max_backoff is 500 ms.
    let greedy = TestServer::start(|i, _| {
        if i == 0 {
            Answer::status(503).with_header("Retry-After", "30")
        } else {
            Answer::status(200)
        }
    });
    let sb = Sandbox::new();
    sb.write(
        "flows/polite.yaml",
        push_flow("polite", &polite.url(""), "50ms", "5s"),
    );
    sb.write(
        "flows/greedy.yaml",
        push_flow("greedy", &greedy.url(""), "50ms", "500ms"),
    );
    let (mut sluice, _ports) = Sluice::serve(&sb, &[], &[("CRM_KEY", CRM_KEY)]);
    sluice.wait_ready("polite");
    sluice.wait_ready("greedy");

    sb.drop_json("inbox/polite", "p-1.json", &json!({ "id": "p-1" }));
    sb.drop_json("inbox/greedy", "g-1.json", &json!({ "id": "g-1" }));
    sluice.expect_within(secs(20), "both files in .done/", || {
        sb.exists("inbox/polite/.done/p-1.json") && sb.exists("inbox/greedy/.done/g-1.json")
    });
    std::thread::sleep(millis(500));

    let p = polite.requests();
    assert_eq!(p.len(), 2, "429 then 200");
    let gap = p[1].at - p[0].at;
    assert!(
        gap >= millis(900),
        "Retry-After: 1 is honoured (waited {gap:?})"
    );
    let g = greedy.requests();
    assert_eq!(g.len(), 2, "503 then 200");
    let gap = g[1].at - g[0].at;
    assert!(
        gap < secs(3),
        "Retry-After: 30 is capped at max_backoff 500ms (waited {gap:?})"
    );
    assert_eq!(g[1].json(), json!({ "id": "g-1", "pushed": true }));
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// enrich
// ---------------------------------------------------------------------------------------------

const ENRICH_FLOW: &str = r#"name: enrich-orders
trigger:
  http: { path: /enrich, method: POST }
steps:
  - enrich:
      url: "@URL@/customers/{{customer.id}}"
      query: { country: "customer.country" }
      headers: { x-api-key: "k-{{customer.id}}" }
      timeout: 5s
      into: customer_record
  - enrich:
      url: "@URL@/score"
      method: POST
      body: "{id: customer.id}"
      into: score
errors:
  retry: { attempts: 2, backoff: 50ms, max_backoff: 200ms }
  # The 502 is answered to the caller; this flow keeps such failures as well.
  dead_letter_answered: true
  dead_letter:
    file: { path: dead-letter/enrich-orders }
"#;

const SLOW_FLOW: &str = r#"name: enrich-slow
trigger:
  http: { path: /enrich-slow, method: POST }
steps:
  - enrich:
      url: "@URL@/slow"
      timeout: 300ms
      into: never
errors:
  retry: { attempts: 1, backoff: 50ms, max_backoff: 200ms }
"#;

#[test]
fn enrich_merges_the_response_and_propagates_the_correlation_id() {
    let server = TestServer::start(|_, r| {
        if r.target.starts_with("/customers/c-1") {
            Answer::json(200, &json!({ "tier": "gold" }))
        } else if r.target.starts_with("/score") {
            Answer::json(200, &json!({ "score": 7 }))
        } else if r.target.starts_with("/slow") {
            std::thread::sleep(secs(3));
            Answer::json(200, &json!({ "late": true }))
        } else {
            Answer::json(503, &json!({ "error": "down" }))
        }
    });
    let sb = Sandbox::new();
    let url = server.url("");
    sb.write(
        "flows/enrich-orders.yaml",
        ENRICH_FLOW.replace("@URL@", &url),
    );
    sb.write("flows/enrich-slow.yaml", SLOW_FLOW.replace("@URL@", &url));
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("enrich-orders");
    sluice.wait_ready("enrich-slow");
    sluice.wait_listener(ports);
    let addr = ports.listen;

    let order = json!({ "id": "o-1", "customer": { "id": "c-1", "country": "DE" } });
    let r = post_json(addr, "/enrich", &[("x-correlation-id", "corr-e-1")], &order);
    assert_eq!(r.status, 200, "{r}\n{}", sluice.log_tail(30));
    assert_eq!(
        r.json(),
        json!({
            "id": "o-1",
            "customer": { "id": "c-1", "country": "DE" },
            "customer_record": { "tier": "gold" },
            "score": { "score": 7 }
        }),
        "{r}"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "one call per enrich step");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].target, "/customers/c-1?country=DE",
        "URL template and query"
    );
    assert_eq!(
        seen[0].header("x-api-key"),
        Some("k-c-1"),
        "header template"
    );
    assert_eq!(seen[0].header("x-correlation-id"), Some("corr-e-1"));
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].target, "/score");
    assert_eq!(seen[1].json(), json!({ "id": "c-1" }), "body from JMESPath");
    assert_eq!(seen[1].header("x-correlation-id"), Some("corr-e-1"));

    // An endpoint that keeps failing with 503: retried (2 attempts), then an `enrich` error,
    // answered as 502 with what the upstream said.
    let order = json!({ "id": "o-2", "customer": { "id": "c-bad", "country": "FR" } });
    let r = post_json(
        addr,
        "/enrich",
        &[("x-correlation-id", "corr-e-bad")],
        &order,
    );
    assert_eq!(r.status, 502, "{r}");
    assert_eq!(r.json()["error"]["kind"], "enrich", "{r}");
    assert_eq!(r.json()["error"]["upstream_status"], 503, "{r}");
    let bad: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/customers/c-bad"))
        .collect();
    assert_eq!(bad.len(), 2, "attempts: 2 counts the first try");
    sluice.expect_within(secs(10), "a dead letter for o-2", || {
        sb.count("dead-letter/enrich-orders") >= 1
    });
    let entry = only_json(&sb, "dead-letter/enrich-orders");
    assert_eq!(entry["message"], order, "{entry:#}");
    assert_eq!(entry["error"]["kind"], "enrich", "{entry:#}");
    assert_eq!(entry["error"]["upstream_status"], 503, "{entry:#}");
    assert!(
        entry.to_string().contains("corr-e-bad"),
        "the correlation id is written into the dead-letter envelope: {entry:#}"
    );

    // A slow endpoint: 504 with kind `timeout`, promptly.
    let started = Instant::now();
    let r = post_json(addr, "/enrich-slow", &[], &json!({ "id": "o-3" }));
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r}");
    assert_eq!(r.json()["error"]["kind"], "timeout", "{r}");
    assert!(
        took < Duration::from_millis(2500),
        "the enrich timeout (300ms) answers before the server does (took {took:?})"
    );
    sluice.assert_running();
    // The envelope counts the tries that were made (the server saw two).
    assert_eq!(entry["error"]["attempts"], 2, "{entry:#}");
}
