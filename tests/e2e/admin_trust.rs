//! Trust of the admin server (issue 9, items 8, 13 and 22): cross-site and DNS-rebinding
//! requests are refused, a flow's own auth cannot be bypassed, probes answer without the token;
//! metrics keep memory flat when nobody scrapes them; a restart right after a stop gets its
//! admin port.

use std::net::SocketAddr;

use crate::support::*;

const SINK_FLOW: &str = r#"name: drop
trigger:
  file:
    path: inbox/drop
    glob: "*.json"
    @FAST@
steps:
  - set:
      seen: "`true`"
  - to: out
sinks:
  out:
    file: { path: outbox/drop, name: "{{id}}.json" }
"#;

const AUTHED_FLOW: &str = r#"name: guarded
trigger:
  http:
    path: /guarded
    method: POST
    auth: { bearer: "flow-s3cret" }
steps:
  - to: out
sinks:
  out:
    file: { path: outbox/guarded, name: "{{id}}.json" }
"#;

/// One request to `addr` with exactly the `Host` given (the support helpers always send the
/// address they connect to).
fn with_host(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    try_exchange(addr, &bytes, secs(30)).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn error_message(r: &HttpResponse) -> String {
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("a JSON error with a message:\n{r}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Item 8: cross-site requests
// ---------------------------------------------------------------------------------------------

#[test]
fn a_cross_site_text_plain_post_is_refused_and_runs_nothing() {
    let sb = Sandbox::new();
    sb.write("flows/drop.yaml", SINK_FLOW.replace("@FAST@", FAST_TRIGGER));
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("drop");
    let host = ports.admin.to_string();

    // What a form or `fetch(…, {mode: "no-cors"})` on another site sends: no preflight.
    let r = with_host(
        ports.admin,
        &host,
        "POST",
        "/api/flows/drop/messages",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://evil.example"),
        ],
        Some(br#"{"id":"x-1"}"#),
    );
    assert_eq!(r.status, 403, "cross-site POST:\n{r}");
    assert_eq!(r.json()["error"]["kind"], "origin", "{r}");
    // Same-origin but not JSON: still refused, by its content type.
    let origin = format!("http://{host}");
    let r = with_host(
        ports.admin,
        &host,
        "POST",
        "/api/flows/drop/messages",
        &[("Content-Type", "text/plain"), ("Origin", &origin)],
        Some(br#"{"id":"x-2"}"#),
    );
    assert_eq!(r.status, 415, "text/plain POST:\n{r}");
    assert!(error_message(&r).contains("application/json"), "{r}");
    // JSON from a foreign origin (it would need a preflight, which fails too).
    let r = with_host(
        ports.admin,
        &host,
        "POST",
        "/api/flows/drop/messages",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example:9850"),
        ],
        Some(br#"{"id":"x-3"}"#),
    );
    assert_eq!(r.status, 403, "cross-site JSON POST:\n{r}");
    let r = with_host(
        ports.admin,
        &host,
        "OPTIONS",
        "/api/flows/drop/messages",
        &[("Origin", "https://evil.example")],
        None,
    );
    assert_ne!(r.status, 200, "no preflight is granted:\n{r}");
    assert!(r.header("access-control-allow-origin").is_none(), "{r}");

    // The same message from a script (no Origin) or the admin server's own origin runs.
    let r = with_host(
        ports.admin,
        &host,
        "POST",
        "/api/flows/drop/messages",
        &[("Content-Type", "application/json"), ("Origin", &origin)],
        Some(br#"{"id":"ok-1"}"#),
    );
    assert_eq!(r.status, 200, "same-origin JSON POST:\n{r}");
    let r = post_json(
        ports.admin,
        "/api/flows/drop/messages",
        &[],
        &json!({"id": "ok-2"}),
    );
    assert_eq!(r.status, 200, "JSON POST without Origin:\n{r}");
    assert_eq!(r.json()["outcome"], "delivered", "{r}");
    assert_eq!(
        sb.names("outbox/drop"),
        ["ok-1.json", "ok-2.json"]
            .into_iter()
            .map(String::from)
            .collect(),
        "only the accepted messages were written"
    );
    sluice.assert_running();
}

#[test]
fn a_foreign_host_is_refused_and_the_admin_address_and_configured_names_answer() {
    let sb = Sandbox::new();
    sb.write("flows/drop.yaml", SINK_FLOW.replace("@FAST@", FAST_TRIGGER));
    let (mut sluice, ports) = Sluice::serve(&sb, &["--admin-host", "sluice.test"], &[]);
    sluice.wait_ready("drop");

    // DNS rebinding: evil.example now resolves to 127.0.0.1, and the browser sends its name.
    for path in ["/api/flows", "/", "/metrics", "/api/dead-letters"] {
        let r = with_host(ports.admin, "evil.example:9850", "GET", path, &[], None);
        assert_eq!(r.status, 421, "GET {path} with a foreign Host:\n{r}");
        let message = error_message(&r);
        assert!(
            message.contains("evil.example") && message.contains("--admin-host"),
            "the refusal says how to allow a name: {message}"
        );
        assert!(!r.text().contains("\"drop\""), "no flow data leaks: {r}");
    }
    let port = ports.admin.port();
    for host in [
        ports.admin.to_string(),
        format!("localhost:{port}"),
        format!("sluice.test:{port}"),
        "SLUICE.test".to_owned(),
    ] {
        let r = with_host(ports.admin, &host, "GET", "/api/flows", &[], None);
        assert_eq!(r.status, 200, "GET /api/flows with Host {host}:\n{r}");
        assert!(r.text().contains("\"drop\""), "{r}");
    }
    sluice.assert_running();
}

#[test]
fn an_admin_host_that_is_not_a_name_is_refused_at_start() {
    let sb = Sandbox::new();
    let out = sb.cli(&["run", "--admin-host", "http://sluice.test/"], None);
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stderr.contains("--admin-host sluice.internal"),
        "{}",
        out.all()
    );
}

#[test]
fn injecting_into_a_flow_with_its_own_auth_needs_the_admin_token() {
    const ADMIN_TOKEN: &str = "adm-trust-e2e";
    let sb = Sandbox::new();
    sb.write("flows/guarded.yaml", AUTHED_FLOW);
    sb.write("flows/drop.yaml", SINK_FLOW.replace("@FAST@", FAST_TRIGGER));
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("guarded");
    sluice.wait_ready("drop");
    let r = post_json(
        ports.admin,
        "/api/flows/guarded/messages",
        &[],
        &json!({"id": "bypass"}),
    );
    assert_eq!(r.status, 403, "inject past the flow's auth:\n{r}");
    let message = error_message(&r);
    assert!(
        message.contains("guarded") && message.contains("--admin-token"),
        "the refusal says why and what to do: {message}"
    );
    assert_eq!(sb.count("outbox/guarded"), 0, "nothing was written");
    // A flow without auth of its own still takes injected messages without a token.
    let r = post_json(
        ports.admin,
        "/api/flows/drop/messages",
        &[],
        &json!({"id": "free"}),
    );
    assert_eq!(r.status, 200, "{r}");
    drop(sluice);

    // With the admin token, the operator may inject into it.
    let (mut sluice, ports) = Sluice::serve(&sb, &["--admin-token", ADMIN_TOKEN], &[]);
    sluice.wait_ready("guarded");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = post_json(
        ports.admin,
        "/api/flows/guarded/messages",
        &[("Authorization", &auth)],
        &json!({"id": "operator"}),
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["outcome"], "delivered", "{r}");
    assert!(sb.exists("outbox/guarded/operator.json"));
    assert_eq!(sb.count("outbox/guarded"), 1);
}

#[test]
fn with_a_token_the_probes_stay_open_and_everything_else_needs_it() {
    const ADMIN_TOKEN: &str = "adm-probe-e2e";
    let sb = Sandbox::new();
    sb.write("flows/drop.yaml", SINK_FLOW.replace("@FAST@", FAST_TRIGGER));
    let (mut sluice, ports) = Sluice::serve(&sb, &["--admin-token", ADMIN_TOKEN], &[]);
    sluice.wait_ready("drop");
    let r = admin_get(ports, "/healthz", None);
    assert_eq!(r.status, 200, "/healthz without a token:\n{r}");
    assert_eq!(r.json()["status"], "ok");
    let r = admin_get(ports, "/readyz", None);
    assert_eq!(r.status, 200, "/readyz without a token:\n{r}");
    assert_eq!(r.json()["ready"], true);
    for path in [
        "/",
        "/metrics",
        "/api/flows",
        "/api/flows/drop",
        "/api/dead-letters",
    ] {
        let r = admin_get(ports, path, None);
        assert_eq!(r.status, 401, "{path} without a token:\n{r}");
        assert!(!r.text().contains(ADMIN_TOKEN), "{path}: the token leaks");
        let r = admin_get(ports, path, Some(ADMIN_TOKEN));
        assert_eq!(r.status, 200, "{path} with the token:\n{r}");
    }
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// Item 13: metrics memory when nobody scrapes
// ---------------------------------------------------------------------------------------------

/// Steps per message: each one records a latency sample, as does the message itself, so a
/// recorder that keeps raw samples grows with every message (STEPS + 1 samples).
const STEPS: usize = 20;
const LINES_PER_FILE: usize = 25_000;
const WARM_UP_FILES: usize = 2;
const MEASURED_FILES: usize = 8;

fn churn_flow() -> String {
    let mut flow = format!(
        "name: churn\ntrigger:\n  file:\n    path: inbox/churn\n    glob: \"*.ndjson\"\n    \
         format: ndjson\n    {FAST_TRIGGER}\nsteps:\n"
    );
    for _ in 0..STEPS {
        flow.push_str("  - filter: \"`true`\"\n");
    }
    flow
}

/// Feeds `files` ndjson files one at a time (each done before the next) into the churn flow;
/// returns the RSS after each.
fn feed(sluice: &mut Sluice, sb: &Sandbox, first: usize, files: usize) -> Vec<u64> {
    let lines: String = (0..LINES_PER_FILE)
        .map(|n| format!("{{\"n\":{n}}}\n"))
        .collect();
    let mut rss = Vec::new();
    for i in first..first + files {
        sb.write_atomic(&format!("inbox/churn/batch-{i}.ndjson"), &lines);
        sluice.expect_within(secs(120), &format!("batch {i} done"), || {
            sb.count("inbox/churn/.done") == i + 1
        });
        rss.push(rss_kib(sluice.pid()));
    }
    rss
}

/// The median of three numbers.
fn median3(window: &[u64]) -> u64 {
    let mut w = window.to_vec();
    w.sort_unstable();
    w[w.len() / 2]
}

/// RSS (KiB) at the start and at the end of the measured files, after a warm-up: medians of
/// the first three and of the last three files, so that one file's buffers do not decide.
fn rss_while_unscraped(extra: &[&str]) -> (u64, u64) {
    let sb = Sandbox::new();
    sb.write("flows/churn.yaml", churn_flow());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["run", "--listen", &listen];
    args.extend_from_slice(extra);
    let mut sluice = Sluice::start(&sb, &args);
    sluice.wait_ready("churn");
    feed(&mut sluice, &sb, 0, WARM_UP_FILES);
    let series = feed(&mut sluice, &sb, WARM_UP_FILES, MEASURED_FILES);
    eprintln!("RSS after each measured file (KiB): {series:?}");
    sluice.assert_running();
    assert!(
        !sluice.log().contains("ERROR"),
        "no errors:\n{}",
        sluice.log_tail(20)
    );
    (median3(&series[..3]), median3(&series[series.len() - 3..]))
}

/// What this bounds: on main (raw samples kept until a scrape) RSS grew by 83 MB over 200,000
/// messages of this flow, about 420 bytes per message (21 samples). Flat here means less than
/// 16 MiB over the 125,000 messages between the two windows, i.e. under a third of that rate;
/// the RSS of a flat process wanders by a few MiB from file to file (buffers, queue), which
/// the medians absorb.
#[test]
fn metrics_memory_stays_flat_when_nobody_scrapes() {
    const BOUND_KIB: u64 = 16 * 1024;
    let messages = ((MEASURED_FILES - 3) * LINES_PER_FILE) as u64;
    let admin = format!("127.0.0.1:{}", free_port());
    for (what, extra) in [
        ("--admin off", vec!["--admin", "off"]),
        ("admin on, never scraped", vec!["--admin", admin.as_str()]),
    ] {
        let (start, end) = rss_while_unscraped(&extra);
        let growth = end.saturating_sub(start);
        eprintln!(
            "{what}: RSS {start} KiB, then {end} KiB {messages} messages later (+{growth} KiB; \
             the bound is {BOUND_KIB} KiB, samples piling up would add about {} KiB)",
            messages * 420 / 1024
        );
        assert!(
            growth < BOUND_KIB,
            "{what}: RSS grew by {growth} KiB over {messages} messages (bound {BOUND_KIB} KiB)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Item 22: a restart right after a stop
// ---------------------------------------------------------------------------------------------

#[test]
fn a_restart_right_after_a_stop_gets_the_admin_port() {
    let sb = Sandbox::new();
    sb.write(
        "flows/drop.yaml",
        SINK_FLOW
            .replace("@FAST@", FAST_TRIGGER)
            .replace("name: drop", "name: slow"),
    );
    std::fs::create_dir_all(sb.path("flows-next")).unwrap();
    // A slow sink keeps the stopping process (and its admin server) alive for a while.
    let (mut old, ports) = Sluice::serve(&sb, &[], &[("SLUICE_TEST_SINK_DELAY", "2s")]);
    old.wait_ready("slow");
    for _ in 0..5 {
        assert_eq!(admin_get(ports, "/healthz", None).status, 200);
    }
    sb.drop_json("inbox/drop", "m-1.json", &json!({"id": "m-1"}));
    old.wait_for_log("test sink delay: write started", secs(30));
    old.signal(libc::SIGTERM);

    // At once, on the same admin port, as a supervisor's restart does.
    let admin = ports.admin.to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut new = Sluice::start(
        &sb,
        &[
            "run",
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--flows",
            "flows-next",
        ],
    );
    let exited = old.wait_exit(secs(30));
    assert!(
        exited.is_some_and(|s| s.success()),
        "the old process stops cleanly: {exited:?}"
    );
    assert!(sb.exists("outbox/drop/m-1.json"), "its message finished");
    new.expect_within(secs(15), "the new admin server answers /healthz", || {
        try_http(ports.admin, "GET", "/healthz", &[], None).is_ok_and(|r| r.status == 200)
    });
    new.wait_admin(ports);
    let log = new.log();
    assert!(
        log.contains("is in use") && log.contains("trying again"),
        "the new process found the port still held and waited for it:\n{}",
        tail(&log, 20)
    );
    assert!(
        !log.contains("cannot start the admin server"),
        "the new process got its admin port:\n{}",
        tail(&log, 20)
    );
    new.assert_running();
}
