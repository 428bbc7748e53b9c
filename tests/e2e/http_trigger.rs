//! The `http` trigger: request-reply over the shared listener, errors mapped to statuses with a
//! JSON body, auth (bearer token, HMAC signature), path parameters / query / headers in `meta`,
//! the `reply` step, and route conflicts.

use std::time::Instant;

use crate::support::*;
use serde_json::Value;

const TOKEN: &str = "tok-7f3a9c-orders-e2e";
const HOOK_SECRET: &str = "whsec-4b1d-e2e-secret";

/// Checks an error answer: status, JSON body `{"error": {"kind", "message", "message_id", …}}`,
/// and that nothing internal leaks (the sandbox path, secrets). Returns `error`.
fn assert_error(sb: &Sandbox, r: &HttpResponse, status: u16, kind: &str) -> Value {
    assert_eq!(r.status, status, "expected {status} ({kind}):\n{r}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "an error body is JSON (content-type {ct:?}):\n{r}"
    );
    let body = r.json();
    let error = &body["error"];
    assert_eq!(error["kind"], kind, "error kind:\n{r}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message is a non-empty string:\n{r}"
    );
    // `message_id` is part of every error body; a request that never became a message (auth,
    // routing) may carry null, one that entered the flow carries its id.
    assert!(
        error.get("message_id").is_some(),
        "error.message_id is present:\n{r}"
    );
    if [422, 500, 504].contains(&status) {
        assert!(
            error["message_id"].as_str().is_some_and(|m| !m.is_empty()),
            "error.message_id is the message's id:\n{r}"
        );
    } else {
        assert!(
            error["message_id"].is_null()
                || error["message_id"].as_str().is_some_and(|m| !m.is_empty()),
            "error.message_id is null or an id:\n{r}"
        );
    }
    let text = r.text();
    let root = sb.root().to_string_lossy().into_owned();
    assert!(!text.contains(&root), "the sandbox path leaks:\n{r}");
    assert!(!text.contains(TOKEN), "the bearer token leaks:\n{r}");
    assert!(!text.contains(HOOK_SECRET), "the HMAC secret leaks:\n{r}");
    assert!(
        !text.contains("panicked") && !text.contains("RUST_BACKTRACE") && !text.contains(".rs:"),
        "internals leak:\n{r}"
    );
    error.clone()
}

// ---------------------------------------------------------------------------------------------
// The order-intake flow over HTTP
// ---------------------------------------------------------------------------------------------

const ORDERS_FLOW: &str = r#"name: orders-http
description: Price incoming orders over HTTP and route them by priority.
trigger:
  http:
    path: /orders
    method: POST
    auth: { bearer: "${env:ORDERS_TOKEN}" }
contract:
  input: order.v1
  output: priced-order.v1
steps:
  - transform: "{order_id: id, customer: customer, lines: lines, currency: currency}"
  - set:
      received_at: "meta('received_at')"
  - script: scripts/price.rhai
  - filter: "length(lines) > `0`"
  - route:
      - when: "priority == 'high'"
        to: express
      - else: standard
sinks:
  express:
    file: { path: outbox/express, name: "{{order_id}}.json" }
  standard:
    file: { path: outbox/standard, name: "{{order_id}}.json" }
errors:
  retry: { attempts: 3, backoff: 50ms, max_backoff: 1s }
  dead_letter:
    file: { path: dead-letter/orders-http }
tests:
  - name: gold customers go express
    input:
      id: o-1
      currency: EUR
      customer: { id: c-1, country: DE, tier: gold }
      lines: [ { sku: A1, qty: 2, price: 9.5 } ]
    expect: { sink: express, payload: { order_id: o-1, priority: high, total: 19.0 } }
"#;

fn orders_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.copy_from_repo("schemas/order.v1.json");
    sb.copy_from_repo("schemas/priced-order.v1.json");
    sb.copy_from_repo("scripts/price.rhai");
    sb.write("flows/orders-http.yaml", ORDERS_FLOW);
    sb
}

fn gold_order(id: &str) -> Value {
    json!({
        "id": id,
        "currency": "EUR",
        "customer": { "id": "c-1", "country": "DE", "tier": "gold" },
        "lines": [ { "sku": "A1", "qty": 2, "price": 9.5 } ]
    })
}

#[test]
fn order_intake_over_http() {
    let sb = orders_sandbox();
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("ORDERS_TOKEN", TOKEN)]);
    sluice.wait_ready("orders-http");
    sluice.wait_listener(ports);
    let addr = ports.listen;
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());

    // A valid gold order: 200 with the priced order, routed express.
    let r = post_json(
        addr,
        "/orders",
        &[auth, ("x-correlation-id", "corr-o-1")],
        &gold_order("o-1"),
    );
    assert_eq!(r.status, 200, "valid order:\n{r}\n{}", sluice.log_tail(30));
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "JSON reply:\n{r}"
    );
    assert_eq!(
        r.header("x-correlation-id"),
        Some("corr-o-1"),
        "the x-correlation-id sent comes back:\n{r}"
    );
    let priced = r.json();
    assert_eq!(priced["order_id"], "o-1", "{priced:#}");
    assert_eq!(priced["priority"], "high", "{priced:#}");
    assert_eq!(priced["total"].as_f64(), Some(19.0), "{priced:#}");
    assert_eq!(
        priced["lines"][0]["total"].as_f64(),
        Some(19.0),
        "{priced:#}"
    );
    assert_eq!(priced["currency"], "EUR", "{priced:#}");
    assert_eq!(priced["customer"]["tier"], "gold", "{priced:#}");
    assert!(
        priced["received_at"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{priced:#}"
    );
    assert!(priced.get("id").is_none(), "id renamed: {priced:#}");
    // The answer comes after the sink confirmed: the file is already there.
    assert!(
        sb.exists("outbox/express/o-1.json"),
        "the routed sink wrote before the reply"
    );
    assert_eq!(sb.read_json("outbox/express/o-1.json"), priced);
    assert!(!sb.exists("outbox/standard/o-1.json"));

    // A small standard order (charset parameter on the media type): routed standard.
    let order = json!({
        "id": "o-3",
        "currency": "EUR",
        "customer": { "id": "c-3", "country": "FR", "tier": "standard" },
        "lines": [ { "sku": "C1", "qty": 2, "price": 12.25 }, { "sku": "C2", "qty": 1, "price": 0.5 } ]
    });
    let r = http(
        addr,
        "POST",
        "/orders",
        &[auth, ("Content-Type", "application/json; charset=utf-8")],
        Some(order.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "standard order:\n{r}");
    let priced = r.json();
    assert_eq!(priced["priority"], "normal", "{priced:#}");
    assert_eq!(priced["total"].as_f64(), Some(25.0), "{priced:#}");
    assert!(
        r.header("x-correlation-id").is_some_and(|v| !v.is_empty()),
        "{r}"
    );
    assert_eq!(sb.read_json("outbox/standard/o-3.json"), priced);

    // An order without lines is filtered: 204, no body; `…+json` is JSON too.
    let mut empty = gold_order("o-5");
    empty["lines"] = json!([]);
    let r = http(
        addr,
        "POST",
        "/orders",
        &[auth, ("Content-Type", "application/vnd.acme.order+json")],
        Some(empty.to_string().as_bytes()),
    );
    assert_eq!(r.status, 204, "filtered order:\n{r}");
    assert!(r.body.is_empty(), "204 has no body:\n{r}");
    assert!(!sb.exists("outbox/express/o-5.json"));

    // Contract violation: 422 with every violation's JSON pointer.
    let invalid = json!({
        "id": "o-6",
        "currency": "euro",
        "customer": { "id": "c-6", "country": "DE", "tier": "standard" },
        "lines": [ { "sku": "E1", "qty": 0, "price": 5 } ]
    });
    let r = post_json(addr, "/orders", &[auth], &invalid);
    let error = assert_error(&sb, &r, 422, "contract");
    let violations = error["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("violations is an array:\n{r}"));
    let pointers: Vec<&str> = violations
        .iter()
        .map(|v| {
            v["pointer"]
                .as_str()
                .unwrap_or_else(|| panic!("pointer: {r}"))
        })
        .collect();
    assert!(
        pointers.contains(&"/currency"),
        "pointers {pointers:?}:\n{r}"
    );
    assert!(
        pointers.contains(&"/lines/0/qty"),
        "pointers {pointers:?}:\n{r}"
    );
    for v in violations {
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "each violation has a message:\n{r}"
        );
    }
    let rejected = (r.clone(), error.clone()); // correlation header checked at the end
    assert!(!sb.exists("outbox/express/o-6.json") && !sb.exists("outbox/standard/o-6.json"));

    // Malformed JSON: 400.
    let r = http(
        addr,
        "POST",
        "/orders",
        &[auth, ("Content-Type", "application/json")],
        Some(br#"{"id": "o-7", "currency": "#),
    );
    assert_error(&sb, &r, 400, "trigger");

    // Not JSON at all: 415.
    let r = http(
        addr,
        "POST",
        "/orders",
        &[auth, ("Content-Type", "text/plain")],
        Some(b"hello, this is not an order"),
    );
    assert_error(&sb, &r, 415, "trigger");

    // A 2 MiB body: 413 without reading it. Only the head and a few bytes are sent; a server
    // that waited for the body would not answer.
    let head = request_bytes(
        addr,
        "POST",
        "/orders",
        &[
            auth,
            ("Content-Type", "application/json"),
            ("Content-Length", "2097152"),
        ],
        Some(br#"{"id": "o-big", "pad": ""#),
    );
    let started = Instant::now();
    let r = try_exchange(addr, &head, secs(10))
        .unwrap_or_else(|e| panic!("the 2 MiB request gets an answer: {e}"));
    let took = started.elapsed();
    assert_error(&sb, &r, 413, "trigger");
    assert!(took < secs(3), "413 comes promptly, took {took:?}");

    // Auth: missing, wrong, other scheme.
    let r = post_json(addr, "/orders", &[], &gold_order("o-8"));
    assert_error(&sb, &r, 401, "auth");
    let r = post_json(
        addr,
        "/orders",
        &[("Authorization", "Bearer tok-wrong-token-e2e")],
        &gold_order("o-9"),
    );
    assert_error(&sb, &r, 401, "auth");
    let r = post_json(
        addr,
        "/orders",
        &[("Authorization", &format!("Basic {TOKEN}"))],
        &gold_order("o-10"),
    );
    assert_error(&sb, &r, 401, "auth");
    for id in ["o-8", "o-9", "o-10"] {
        assert!(
            !sb.exists(&format!("outbox/express/{id}.json")),
            "{id}: an unauthenticated request runs nothing"
        );
    }

    // Still fine afterwards, and the token never reached the log.
    let r = post_json(addr, "/orders", &[auth], &gold_order("o-11"));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["order_id"], "o-11");
    let log = sluice.log();
    assert!(!log.contains(TOKEN), "the bearer token appears in the log");
    sluice.assert_running();

    // Errors carry the correlation id too: without a correlation header it is the message id.
    let (r, error) = rejected;
    assert_eq!(
        r.header("x-correlation-id"),
        error["message_id"].as_str(),
        "without a correlation header the correlation id is the message id:\n{r}"
    );
}

// ---------------------------------------------------------------------------------------------
// Path parameters, query and headers in meta; 404 / 405
// ---------------------------------------------------------------------------------------------

const ITEMS_FLOW: &str = r#"name: items
trigger:
  http:
    path: "/items/{id}"
    method: GET
steps:
  - transform: "`{}`"
  - set:
      id: "meta('http.path.id')"
      q: "meta('http.query.q')"
      method: "meta('http.method')"
      path: "meta('http.path')"
      thing: "meta('http.header.x-thing')"
      auth: "meta('http.header.authorization')"
      corr: "meta('correlation_id')"
"#;

#[test]
fn path_parameters_query_and_headers_land_in_meta() {
    let sb = Sandbox::new();
    sb.write("flows/items.yaml", ITEMS_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("items");
    sluice.wait_listener(ports);
    let addr = ports.listen;

    let r = http(
        addr,
        "GET",
        "/items/abc-1?q=hello%20world&other=1",
        &[
            ("x-thing", "T1"),
            ("Authorization", "Bearer not-for-meta"),
            ("x-correlation-id", "corr-77"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{r}\n{}", sluice.log_tail(30));
    assert_eq!(
        r.json(),
        json!({
            "id": "abc-1",
            "q": "hello world",
            "method": "GET",
            "path": "/items/abc-1",
            "thing": "T1",
            "auth": null,
            "corr": "corr-77"
        }),
        "meta as seen by the flow:\n{r}"
    );
    assert_eq!(r.header("x-correlation-id"), Some("corr-77"), "{r}");

    // A W3C traceparent wins over x-correlation-id: its trace id is the correlation id.
    let r = http(
        addr,
        "GET",
        "/items/xyz",
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-correlation-id", "corr-ignored"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(v["id"], "xyz", "{r}");
    assert_eq!(v["q"], Value::Null, "no query parameter q: {r}");
    assert_eq!(v["corr"], "4bf92f3577b34da6a3ce929d0e0e4736", "{r}");
    assert_eq!(
        r.header("x-correlation-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{r}"
    );

    // Wrong method on a known path: 405; unknown paths: 404.
    let r = http(
        addr,
        "POST",
        "/items/abc-1",
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    );
    assert_error(&sb, &r, 405, "method_not_allowed");
    let r = http_get(addr, "/nope");
    assert_error(&sb, &r, 404, "not_found");
    let r = http_get(addr, "/items/a/b");
    assert_error(&sb, &r, 404, "not_found");
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// The reply step; failures are 500 with the error kind
// ---------------------------------------------------------------------------------------------

const WIDGETS_FLOW: &str = r#"name: widgets
trigger:
  http: { path: /widgets, method: POST }
steps:
  - set:
      created: "`true`"
  - reply:
      status: 201
      headers:
        location: "/widgets/{{id}}"
        x-widget-kind: "{{kind}}"
"#;

const BOOM_FLOW: &str = r#"name: boom
trigger:
  http: { path: /boom, method: POST }
steps:
  - script: |
      if payload.explode { throw "kaput"; }
      payload.fine = true;
"#;

#[test]
fn reply_step_sets_status_and_headers_and_failures_are_500() {
    let sb = Sandbox::new();
    sb.write("flows/widgets.yaml", WIDGETS_FLOW);
    sb.write("flows/boom.yaml", BOOM_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("widgets");
    sluice.wait_ready("boom");
    sluice.wait_listener(ports);
    let addr = ports.listen;

    let r = post_json(
        addr,
        "/widgets",
        &[],
        &json!({ "id": "w-7", "kind": "gear" }),
    );
    assert_eq!(r.status, 201, "reply status:\n{r}\n{}", sluice.log_tail(30));
    assert_eq!(r.header("location"), Some("/widgets/w-7"), "{r}");
    assert_eq!(r.header("x-widget-kind"), Some("gear"), "{r}");
    assert_eq!(
        r.json(),
        json!({ "id": "w-7", "kind": "gear", "created": true }),
        "{r}"
    );

    let r = post_json(addr, "/boom", &[], &json!({ "explode": false }));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json(), json!({ "explode": false, "fine": true }), "{r}");

    let r = post_json(addr, "/boom", &[], &json!({ "explode": true }));
    let error = assert_error(&sb, &r, 500, "script");
    assert_eq!(
        r.header("x-correlation-id"),
        error["message_id"].as_str(),
        "the correlation id (the message id here) comes back on errors too:\n{r}"
    );
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// HMAC-signed webhooks
// ---------------------------------------------------------------------------------------------

const HOOK_FLOW: &str = r#"name: hook
trigger:
  http:
    path: /hooks/github
    method: POST
    auth:
      hmac: { secret: "${env:HOOK_SECRET}", header: x-signature, prefix: "sha256=" }
steps:
  - transform: "{event: action, number: number, ok: `true`}"
"#;

#[test]
fn hmac_signed_webhooks() {
    // The test's own HMAC against RFC 4231, test case 2.
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );

    let sb = Sandbox::new();
    sb.write("flows/hook.yaml", HOOK_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("HOOK_SECRET", HOOK_SECRET)]);
    sluice.wait_ready("hook");
    sluice.wait_listener(ports);
    let addr = ports.listen;

    let body = br#"{"action":"opened","number":42}"#;
    let signature = format!("sha256={}", hex(&hmac_sha256(HOOK_SECRET.as_bytes(), body)));
    let send = |sig: Option<&str>, body: &[u8]| {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(sig) = sig {
            headers.push(("x-signature", sig));
        }
        http(addr, "POST", "/hooks/github", &headers, Some(body))
    };

    let r = send(Some(&signature), body);
    assert_eq!(
        r.status,
        200,
        "correct signature:\n{r}\n{}",
        sluice.log_tail(30)
    );
    assert_eq!(
        r.json(),
        json!({ "event": "opened", "number": 42, "ok": true }),
        "{r}"
    );

    // The same JSON with different bytes (a space) is a different body: the signature is of the
    // raw body.
    let r = send(Some(&signature), br#"{"action": "opened","number":42}"#);
    assert_error(&sb, &r, 401, "auth");
    // A signature of something else.
    let other = format!(
        "sha256={}",
        hex(&hmac_sha256(HOOK_SECRET.as_bytes(), b"something else"))
    );
    let r = send(Some(&other), body);
    assert_error(&sb, &r, 401, "auth");
    // The right signature with the wrong key.
    let wrong_key = format!("sha256={}", hex(&hmac_sha256(b"not-the-secret", body)));
    let r = send(Some(&wrong_key), body);
    assert_error(&sb, &r, 401, "auth");
    // The right hex without the prefix, and no header at all.
    let r = send(Some(signature.trim_start_matches("sha256=")), body);
    assert_error(&sb, &r, 401, "auth");
    let r = send(None, body);
    assert_error(&sb, &r, 401, "auth");

    // Still accepted afterwards; the secret never reached the log.
    let r = send(Some(&signature), body);
    assert_eq!(r.status, 200, "{r}");
    assert!(
        !sluice.log().contains(HOOK_SECRET),
        "the HMAC secret appears in the log"
    );
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// Two flows on one method and path
// ---------------------------------------------------------------------------------------------

fn route_flow(name: &str, method: &str, who: &str) -> String {
    format!(
        "name: {name}\ntrigger:\n  http: {{ path: /dup, method: {method} }}\nsteps:\n  - transform: \"`{{\\\"who\\\": \\\"{who}\\\"}}`\"\n"
    )
}

#[test]
fn two_flows_on_one_method_and_path_are_rejected_naming_both_files() {
    let sb = Sandbox::new();
    sb.write("flows/dup-a.yaml", route_flow("dup-a", "POST", "a"));
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("dup-a");
    sluice.wait_listener(ports);
    let addr = ports.listen;
    let r = post_json(addr, "/dup", &[], &json!({}));
    assert_eq!(r.status, 200, "{r}\n{}", sluice.log_tail(30));
    assert_eq!(r.json(), json!({ "who": "a" }), "{r}");

    // Same method and path in a second file: rejected, naming both files.
    let mark = sluice.mark();
    sb.write("flows/dup-b.yaml", route_flow("dup-b", "POST", "b"));
    sluice.wait_for_line_since(
        mark,
        "a `reload failed`/error line about flows/dup-b.yaml",
        secs(20),
        |l| (l.contains("reload failed") || l.contains("ERROR")) && l.contains("dup-b.yaml"),
    );
    let ok = wait_until(secs(2), || {
        let text = sluice.log_since(mark);
        text.contains("flows/dup-a.yaml") && text.contains("flows/dup-b.yaml")
    });
    assert!(
        ok,
        "the error names both files:\n{}",
        sluice.log_since(mark)
    );
    let since = sluice.log_since(mark);
    assert!(
        !since.lines().any(
            |l| (l.contains("flow ready") || l.contains("flow reloaded")) && has_flow(l, "dup-b")
        ),
        "the conflicting flow must not start:\n{}",
        tail(&since, 20)
    );
    let r = post_json(addr, "/dup", &[], &json!({}));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json(),
        json!({ "who": "a" }),
        "the first flow keeps the route: {r}"
    );

    // Another method on the same path is no conflict.
    let mark = sluice.mark();
    sb.write("flows/dup-c.yaml", route_flow("dup-c", "PUT", "c"));
    sluice.wait_for_line_since(mark, "`flow ready` for flow=dup-c", secs(20), |l| {
        l.contains("flow ready") && has_flow(l, "dup-c")
    });
    let r = http(
        addr,
        "PUT",
        "/dup",
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json(), json!({ "who": "c" }), "{r}");
    let r = post_json(addr, "/dup", &[], &json!({}));
    assert_eq!(r.json(), json!({ "who": "a" }), "{r}");
    sluice.assert_running();
}
