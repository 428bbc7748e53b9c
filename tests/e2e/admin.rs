//! The admin server: health, readiness, Prometheus metrics that match what was sent, the flows
//! API, injecting messages, dead letters, the admin token; and the `schedule` trigger.

use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Instant;

use crate::support::*;
use serde_json::Value;

const THING_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["id"],
  "properties": { "id": { "type": "string", "minLength": 1 } }
}"#;

const DROP_FLOW: &str = r#"name: drop
trigger:
  file:
    path: inbox/drop
    glob: "*.json"
    @FAST@
contract:
  input: thing.v1
steps:
  - filter: "id != 'skip'"
  - set:
      seen: "`true`"
  - to: out
sinks:
  out:
    file: { path: outbox/drop, name: "{{id}}.json" }
errors:
  dead_letter:
    file: { path: dead-letter/drop }
"#;

const API_FLOW: &str = r#"name: api
trigger:
  http: { path: /api-in, method: POST }
contract:
  input: thing.v1
steps:
  - set:
      answered: "`true`"
"#;

/// The flows of `GET /api/flows`: a JSON array, or an object holding one under `flows`.
fn flows_list(v: &Value) -> Vec<Value> {
    v.as_array()
        .or_else(|| v["flows"].as_array())
        .unwrap_or_else(|| panic!("/api/flows is a list of flows: {v:#}"))
        .clone()
}

fn find_flow(list: &[Value], name: &str) -> Value {
    list.iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("flow {name} in /api/flows: {list:#?}"))
        .clone()
}

fn counters(flow: &Value) -> [u64; 5] {
    let c = &flow["counters"];
    [
        "received",
        "completed",
        "filtered",
        "failed",
        "dead_lettered",
    ]
    .map(|k| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("counters.{k} is a number: {flow:#}"))
    })
}

#[test]
fn health_readiness_metrics_and_flows_api_match_what_was_sent() {
    const N_FILES: usize = 5;
    const N_HTTP: usize = 4;
    let sb = Sandbox::new();
    sb.write("schemas/thing.v1.json", THING_SCHEMA);
    sb.write("flows/drop.yaml", DROP_FLOW.replace("@FAST@", FAST_TRIGGER));
    sb.write("flows/api.yaml", API_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("drop");
    sluice.wait_ready("api");
    sluice.wait_listener(ports);

    let r = admin_get(ports, "/healthz", None);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json(), json!({ "status": "ok" }), "{r}");
    let mut r = admin_get(ports, "/readyz", None);
    // The triggers have just started; give them a moment to report healthy.
    let ready = wait_until(secs(5), || {
        r = admin_get(ports, "/readyz", None);
        r.status == 200
    });
    assert!(ready, "/readyz with every flow ready:\n{r}");
    assert_eq!(r.json(), json!({ "ready": true }), "{r}");

    // Before anything was sent, the metrics parse and the counters are zero (or absent).
    let m = scrape(ports);
    assert_eq!(
        m.count("sluice_messages_received_total", &[("flow", "drop")]),
        0.0
    );

    // N files and N HTTP requests.
    for i in 0..N_FILES {
        sb.drop_json(
            "inbox/drop",
            &format!("d-{i}.json"),
            &json!({ "id": format!("d-{i}") }),
        );
    }
    for i in 0..N_HTTP {
        let r = post_json(
            ports.listen,
            "/api-in",
            &[],
            &json!({ "id": format!("h-{i}") }),
        );
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(
            r.json(),
            json!({ "id": format!("h-{i}"), "answered": true })
        );
    }
    sluice.expect_within(secs(20), "every file in .done/", || {
        sb.count("inbox/drop/.done") == N_FILES
    });
    assert_eq!(sb.count("outbox/drop"), N_FILES);

    // The file trigger acknowledges after the counters move; give the scrape a moment.
    let mut m = scrape(ports);
    wait_until(secs(3), || {
        m = scrape(ports);
        m.count("sluice_messages_completed_total", &[("flow", "drop")]) >= N_FILES as f64
    });
    let n_files = N_FILES as f64;
    let n_http = N_HTTP as f64;
    assert_eq!(
        m.count("sluice_messages_received_total", &[("flow", "drop")]),
        n_files
    );
    assert_eq!(
        m.count("sluice_messages_completed_total", &[("flow", "drop")]),
        n_files
    );
    assert_eq!(
        m.count("sluice_messages_received_total", &[("flow", "api")]),
        n_http
    );
    assert_eq!(
        m.count("sluice_messages_completed_total", &[("flow", "api")]),
        n_http
    );
    assert_eq!(
        m.count(
            "sluice_http_requests_total",
            &[("flow", "api"), ("status", "200")]
        ),
        n_http
    );
    assert_eq!(
        m.count("sluice_messages_failed_total", &[("flow", "drop")]),
        0.0
    );
    assert_eq!(
        m.count("sluice_messages_filtered_total", &[("flow", "drop")]),
        0.0
    );
    assert_eq!(
        m.value("sluice_messages_in_flight", &[("flow", "drop")]),
        Some(0.0),
        "in-flight gauge for drop"
    );
    // Types: counters and histograms.
    for family in [
        "sluice_messages_received_total",
        "sluice_messages_completed_total",
        "sluice_http_requests_total",
    ] {
        let ty = m
            .types
            .get(family)
            .or_else(|| m.types.get(family.trim_end_matches("_total")))
            .unwrap_or_else(|| panic!("# TYPE for {family}: {:?}", m.types));
        assert_eq!(ty, "counter", "{family}");
    }
    for family in [
        "sluice_message_duration_seconds",
        "sluice_step_duration_seconds",
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some("histogram"),
            "{family} is a histogram: {:?}",
            m.types
        );
    }
    assert_eq!(
        m.count("sluice_message_duration_seconds_count", &[("flow", "drop")]),
        n_files,
        "end-to-end latency observed once per message"
    );
    assert!(
        m.matching(
            "sluice_message_duration_seconds_bucket",
            &[("flow", "drop"), ("le", "+Inf")]
        )
        .next()
        .is_some(),
        "a +Inf bucket"
    );
    let step_samples: Vec<&Sample> = m
        .matching("sluice_step_duration_seconds_count", &[("flow", "drop")])
        .collect();
    assert!(
        !step_samples.is_empty()
            && step_samples
                .iter()
                .all(|s| s.labels.iter().any(|(k, _)| k == "step")),
        "step latency per flow and step: {step_samples:?}"
    );

    // /api/flows with counters.
    let r = admin_get(ports, "/api/flows", None);
    assert_eq!(r.status, 200, "{r}");
    let list = flows_list(&r.json());
    assert_eq!(list.len(), 2, "two flows: {list:#?}");
    let drop = find_flow(&list, "drop");
    assert_eq!(drop["state"], "running", "{drop:#}");
    assert!(drop["last_error"].is_null(), "{drop:#}");
    assert!(
        drop["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("flows/drop.yaml")),
        "{drop:#}"
    );
    assert!(
        drop["version"].as_str().is_some_and(|v| !v.is_empty()) || drop["version"].is_number(),
        "a version: {drop:#}"
    );
    assert!(drop["trigger"].to_string().contains("file"), "{drop:#}");
    assert_eq!(
        counters(&drop),
        [N_FILES as u64, N_FILES as u64, 0, 0, 0],
        "{drop:#}"
    );
    let api = find_flow(&list, "api");
    assert!(api["trigger"].to_string().contains("http"), "{api:#}");
    assert_eq!(
        counters(&api),
        [N_HTTP as u64, N_HTTP as u64, 0, 0, 0],
        "{api:#}"
    );
    let one = admin_flow(ports, "drop");
    assert_eq!(one["name"], "drop");
    assert_eq!(counters(&one), counters(&drop));
    let r = admin_get(ports, "/api/flows/no-such-flow", None);
    assert_eq!(r.status, 404, "{r}");

    // A filtered file.
    sb.drop_json("inbox/drop", "skip.json", &json!({ "id": "skip" }));
    sluice.expect_within(secs(20), "skip.json in .done/", || {
        sb.exists("inbox/drop/.done/skip.json")
    });
    let mut m = scrape(ports);
    wait_until(secs(3), || {
        m = scrape(ports);
        m.count("sluice_messages_filtered_total", &[("flow", "drop")]) >= 1.0
    });
    assert_eq!(
        m.count("sluice_messages_filtered_total", &[("flow", "drop")]),
        1.0
    );
    assert!(!sb.exists("outbox/drop/skip.json"));

    // Contract failures: one over HTTP, one as a file.
    let r = post_json(ports.listen, "/api-in", &[], &json!({ "id": 7 }));
    assert_eq!(r.status, 422, "{r}");
    sb.drop_json("inbox/drop", "bad.json", &json!({ "nope": true }));
    sluice.expect_within(secs(20), "bad.json in .rejected/", || {
        sb.exists("inbox/drop/.rejected/bad.json")
    });
    let mut m = scrape(ports);
    wait_until(secs(3), || {
        m = scrape(ports);
        m.count(
            "sluice_messages_failed_total",
            &[("flow", "drop"), ("kind", "contract")],
        ) >= 1.0
    });
    assert_eq!(
        m.count(
            "sluice_messages_failed_total",
            &[("flow", "api"), ("kind", "contract")]
        ),
        1.0
    );
    assert_eq!(
        m.count(
            "sluice_messages_failed_total",
            &[("flow", "drop"), ("kind", "contract")]
        ),
        1.0
    );
    assert_eq!(
        m.count("sluice_messages_failed_total", &[("flow", "drop")]),
        1.0
    );
    assert_eq!(
        m.count(
            "sluice_http_requests_total",
            &[("flow", "api"), ("status", "422")]
        ),
        1.0
    );
    assert_eq!(
        m.count("sluice_messages_dead_lettered_total", &[("flow", "drop")]),
        1.0,
        "the rejected file went to the dead letter"
    );
    // (Whether a filtered message also counts as completed is not specified; the api flow has
    // no filter.)
    assert_eq!(
        m.count("sluice_messages_completed_total", &[("flow", "api")]),
        n_http
    );
    let drop = admin_flow(ports, "drop");
    let [_, _, filtered, failed, dead] = counters(&drop);
    assert_eq!(
        (filtered, failed, dead),
        (1, 1, 1),
        "counters filtered/failed/dead_lettered after a filter and a failure: {drop:#}"
    );
    let api = admin_flow(ports, "api");
    let [_, completed, _, failed, _] = counters(&api);
    assert_eq!(
        (completed, failed),
        (N_HTTP as u64, 1),
        "api counters: {api:#}"
    );
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// Injecting messages; dead letters
// ---------------------------------------------------------------------------------------------

const INJECT_FLOW: &str = r#"name: inject
trigger:
  file:
    path: inbox/inject
    glob: "*.json"
    @FAST@
contract:
  input: thing.v1
steps:
  - script: |
      if payload.boom == true { throw "boom requested"; }
      payload.injected = true;
  - to: out
sinks:
  out:
    file: { path: outbox/inject, name: "{{id}}.json" }
errors:
  dead_letter:
    file: { path: dead-letter/inject }
"#;

fn inject(ports: Ports, flow: &str, body: &Value) -> HttpResponse {
    http(
        ports.admin,
        "POST",
        &format!("/api/flows/{flow}/messages"),
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

#[test]
fn inject_messages_and_list_dead_letters() {
    let sb = Sandbox::new();
    sb.write("schemas/thing.v1.json", THING_SCHEMA);
    sb.write(
        "flows/inject.yaml",
        INJECT_FLOW.replace("@FAST@", FAST_TRIGGER),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("inject");

    // Runs for real: the sink writes.
    let r = inject(ports, "inject", &json!({ "id": "m-1" }));
    assert_eq!(r.status, 200, "{r}\n{}", sluice.log_tail(30));
    let v = r.json();
    assert_eq!(v["outcome"], "delivered", "{v:#}");
    assert!(
        v["message_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{v:#}"
    );
    assert_eq!(
        v["payload"],
        json!({ "id": "m-1", "injected": true }),
        "{v:#}"
    );
    assert!(v.get("error").is_none_or(Value::is_null), "{v:#}");
    assert_eq!(
        sb.read_json("outbox/inject/m-1.json"),
        json!({ "id": "m-1", "injected": true }),
        "the injected message was written by the sink"
    );

    // A contract failure comes back as an error outcome.
    let r = inject(ports, "inject", &json!({ "nope": 1 }));
    let v = r.json();
    assert_eq!(v["outcome"], "error", "{r}");
    assert_eq!(v["error"]["kind"], "contract", "{r}");
    // A script failure too.
    let r = inject(ports, "inject", &json!({ "id": "m-2", "boom": true }));
    let v = r.json();
    assert_eq!(v["outcome"], "error", "{r}");
    assert_eq!(v["error"]["kind"], "script", "{r}");
    assert!(!sb.exists("outbox/inject/m-2.json"));
    // Unknown flow.
    let r = inject(ports, "no-such-flow", &json!({ "id": "m-3" }));
    assert_eq!(r.status, 404, "{r}");

    // A dead letter from a file, listed by the API.
    sb.drop_json(
        "inbox/inject",
        "f-1.json",
        &json!({ "id": "f-1", "boom": true }),
    );
    sluice.expect_within(secs(20), "f-1.json in .error/", || {
        sb.exists("inbox/inject/.error/f-1.json")
    });
    sluice.expect_within(secs(10), "a dead letter", || {
        sb.count("dead-letter/inject") >= 1
    });
    let mut list = Vec::new();
    let listed = wait_until(secs(5), || {
        let r = admin_get(ports, "/api/dead-letters", None);
        assert_eq!(r.status, 200, "{r}");
        let v = r.json();
        list = v
            .as_array()
            .or_else(|| v["dead_letters"].as_array())
            .or_else(|| v["entries"].as_array())
            .unwrap_or_else(|| panic!("/api/dead-letters is a list: {v:#}"))
            .clone();
        list.iter().any(|e| e["kind"] == "script")
    });
    assert!(listed, "the script failure is listed: {list:#?}");
    let entry = list.iter().find(|e| e["kind"] == "script").unwrap();
    assert_eq!(entry["flow"], "inject", "{entry:#}");
    assert!(
        entry["message_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{entry:#}"
    );
    assert!(
        entry["message"]
            .as_str()
            .is_some_and(|s| s.contains("boom requested")),
        "{entry:#}"
    );
    assert!(
        entry["time"].as_str().is_some_and(|s| !s.is_empty()),
        "{entry:#}"
    );
    let file = entry["file"]
        .as_str()
        .unwrap_or_else(|| panic!("file: {entry:#}"));
    let on_disk = sb.names("dead-letter/inject");
    assert!(
        on_disk.iter().any(|n| file.ends_with(n.as_str())),
        "entry.file {file} is one of {on_disk:?}"
    );
    let name = on_disk.iter().find(|n| file.ends_with(n.as_str())).unwrap();
    let envelope = sb.read_json(&format!("dead-letter/inject/{name}"));
    assert_eq!(
        envelope["error"]["message_id"]
            .as_str()
            .or(envelope["meta"]["message_id"].as_str()),
        entry["message_id"].as_str(),
        "{envelope:#}"
    );
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// The admin token
// ---------------------------------------------------------------------------------------------

#[test]
fn admin_token_is_required_when_set() {
    const ADMIN_TOKEN: &str = "adm-s3cret-e2e";
    let sb = Sandbox::new();
    sb.write("schemas/thing.v1.json", THING_SCHEMA);
    sb.write("flows/drop.yaml", DROP_FLOW.replace("@FAST@", FAST_TRIGGER));
    let (mut sluice, ports) = Sluice::serve(&sb, &["--admin-token", ADMIN_TOKEN], &[]);
    sluice.wait_ready("drop");

    for path in [
        "/api/flows",
        "/api/flows/drop",
        "/metrics",
        "/api/dead-letters",
        "/",
    ] {
        let r = admin_get(ports, path, None);
        assert_eq!(r.status, 401, "{path} without a token:\n{r}");
        let r = admin_get(ports, path, Some("wrong-token"));
        assert_eq!(r.status, 401, "{path} with a wrong token:\n{r}");
        assert!(!r.text().contains(ADMIN_TOKEN), "{path}: the token leaks");
    }
    let r = http(
        ports.admin,
        "POST",
        "/api/flows/drop/messages",
        &[("Content-Type", "application/json")],
        Some(br#"{"id":"x-1"}"#),
    );
    assert_eq!(r.status, 401, "inject without a token:\n{r}");
    assert!(!sb.exists("outbox/drop/x-1.json"), "nothing ran");

    let r = admin_get(ports, "/api/flows", Some(ADMIN_TOKEN));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        find_flow(&flows_list(&r.json()), "drop")["state"],
        "running"
    );
    // Probes cannot send a token: /healthz and /readyz answer without one.
    for path in ["/healthz", "/readyz"] {
        let r = admin_get(ports, path, None);
        assert_eq!(r.status, 200, "{path} without a token:\n{r}");
    }
    scrape_with(ports, Some(ADMIN_TOKEN));
    assert!(
        !sluice.log().contains(ADMIN_TOKEN),
        "the admin token appears in the log"
    );
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// Readiness when a trigger cannot start
// ---------------------------------------------------------------------------------------------

#[test]
fn readyz_is_503_and_names_the_flow_when_the_listener_cannot_bind() {
    let sb = Sandbox::new();
    sb.write("schemas/thing.v1.json", THING_SCHEMA);
    sb.write("flows/api.yaml", API_FLOW);
    sb.write("flows/drop.yaml", DROP_FLOW.replace("@FAST@", FAST_TRIGGER));
    // Someone else holds the listener's port.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let ports = Ports {
        listen: taken,
        admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
    };
    let (listen, admin) = (ports.listen.to_string(), ports.admin.to_string());
    let mut sluice =
        Sluice::start_with_env(&sb, &["run", "--listen", &listen, "--admin", &admin], &[]);
    sluice.wait_admin(ports);
    sluice.wait_ready("drop");

    let mut r = admin_get(ports, "/readyz", None);
    let unready = wait_until(secs(10), || {
        r = admin_get(ports, "/readyz", None);
        r.status == 503
    });
    assert!(
        unready,
        "/readyz is 503 while the listener cannot bind:\n{r}\n{}",
        sluice.log_tail(30)
    );
    let v = r.json();
    assert_eq!(v["ready"], false, "{v:#}");
    let list = v["unready"]
        .as_array()
        .unwrap_or_else(|| panic!("unready: {v:#}"));
    assert!(
        list.iter()
            .any(|u| u["flow"] == "api" && u["reason"].as_str().is_some_and(|s| !s.is_empty())),
        "the http flow is named with a reason: {v:#}"
    );
    assert!(
        !list.iter().any(|u| u["flow"] == "drop"),
        "the file flow is healthy: {v:#}"
    );
    let log = sluice.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && (l.contains(&listen) || l.contains("listen"))),
        "the bind failure is logged as an error:\n{}",
        tail(&log, 30)
    );
    let r = admin_get(ports, "/healthz", None);
    assert_eq!(r.status, 200, "the process still runs: {r}");
    // The file flow works regardless.
    sb.drop_json("inbox/drop", "ok.json", &json!({ "id": "ok" }));
    sluice.wait_json(&sb, "outbox/drop/ok.json", secs(20));
    drop(squatter);
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// The schedule trigger
// ---------------------------------------------------------------------------------------------

const TICK_FLOW: &str = r#"name: tick
trigger:
  schedule:
    every: 200ms
    payload: { job: cleanup }
steps:
  - set:
      tick: "meta('schedule.tick')"
      id: "meta('message_id')"
  - to: out
sinks:
  out:
    file: { path: outbox/tick, name: "{{id}}.json" }
"#;

const CRON_FLOW: &str = r#"name: cron
trigger:
  schedule:
    cron: "* * * * * *"
steps:
  - set:
      tick: "meta('schedule.tick')"
  - to: out
sinks:
  out:
    file: { path: outbox/cron, name: "{{meta('message_id')}}.json" }
"#;

/// Every tick takes long: a busy loop in a script (sandbox limits raised for it).
const SLOW_TICK_FLOW: &str = r#"name: slow-tick
script_limits: { deadline: 30s, max_operations: 500000000 }
trigger:
  schedule:
    every: 100ms
steps:
  - script: |
      let x = 0;
      for i in 0..@LOOPS@ { x += i; }
      payload.x = x;
"#;

#[test]
fn schedule_ticks_produce_messages_and_busy_ticks_are_skipped() {
    let sb = Sandbox::new();
    sb.write("flows/tick.yaml", TICK_FLOW);
    sb.write("flows/cron.yaml", CRON_FLOW);
    sb.write(
        "flows/slow-tick.yaml",
        SLOW_TICK_FLOW.replace("@LOOPS@", "1500000"),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("tick");
    sluice.wait_ready("cron");
    sluice.wait_ready("slow-tick");
    let started = Instant::now();

    sluice.expect_within(secs(10), "at least 5 ticks written", || {
        sb.count("outbox/tick") >= 5
    });
    sluice.expect_within(secs(10), "at least 2 cron ticks written", || {
        sb.count("outbox/cron") >= 2
    });
    let mut ticks = std::collections::BTreeSet::new();
    for name in sb.names("outbox/tick") {
        let v = sb.read_json(&format!("outbox/tick/{name}"));
        assert_eq!(v["job"], "cleanup", "the configured payload: {v:#}");
        let tick = v["tick"]
            .as_str()
            .unwrap_or_else(|| panic!("schedule.tick: {v:#}"));
        assert!(
            tick.len() >= 20 && tick.as_bytes()[4] == b'-' && tick.contains('T'),
            "schedule.tick is RFC 3339: {tick}"
        );
        ticks.insert(tick.to_owned());
    }
    assert_eq!(
        ticks.len(),
        sb.count("outbox/tick"),
        "every message is its own tick"
    );
    for name in sb.names("outbox/cron") {
        let v = sb.read_json(&format!("outbox/cron/{name}"));
        assert_eq!(
            v["tick"].as_str().map(|t| t.contains('T')),
            Some(true),
            "{v:#}"
        );
        assert!(v.get("job").is_none(), "the default payload is {{}}: {v:#}");
    }

    // The slow flow: let it run a while, then compare its run time with the 100 ms interval.
    let elapsed_target = secs(4);
    if let Some(rest) = elapsed_target.checked_sub(started.elapsed()) {
        thread::sleep(rest);
    }
    let m = scrape(ports);
    let sum = m.count(
        "sluice_message_duration_seconds_sum",
        &[("flow", "slow-tick")],
    );
    let count = m.count(
        "sluice_message_duration_seconds_count",
        &[("flow", "slow-tick")],
    );
    assert!(
        count >= 1.0,
        "the slow flow ran at least once\n{}",
        sluice.log_tail(30)
    );
    let mean = sum / count;
    eprintln!("slow-tick: {count} runs, mean {mean:.3}s");
    assert!(
        mean >= 0.15,
        "test precondition: each slow tick takes longer than the 100ms interval (mean {mean:.3}s); raise @LOOPS@"
    );
    let skipped = m.count(
        "sluice_schedule_ticks_skipped_total",
        &[("flow", "slow-tick")],
    );
    assert!(
        skipped >= 1.0,
        "busy ticks are skipped and counted (skipped {skipped})"
    );
    let in_flight = m
        .value("sluice_messages_in_flight", &[("flow", "slow-tick")])
        .unwrap_or(0.0);
    assert!(
        in_flight <= 1.0,
        "ticks are not queued up (in flight {in_flight})"
    );
    let received = m.count("sluice_messages_received_total", &[("flow", "slow-tick")]);
    let run_for = started.elapsed().as_secs_f64();
    assert!(
        received <= run_for / mean + 2.0,
        "no more runs than fit one after the other: {received} in {run_for:.1}s at {mean:.3}s each"
    );
    assert!(
        sluice
            .log()
            .lines()
            .any(|l| l.contains("skip") && has_flow(l, "slow-tick")),
        "a skipped tick is logged"
    );
    sluice.assert_running();
}
