//! What a client of the HTTP listener can (no longer) do to sluice: credentials copied into
//! dead letters, replayed HMAC signatures, unfinished bodies holding memory, half-sent
//! requests holding file descriptors, rejected requests filling the dead letter, and a 504
//! whose message is delivered anyway (issue 9, items 9, 10, 11, 12, 19 and 20).

use crate::support::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

/// The body of an error answer, `{"error": {...}}`.
fn error_of(r: &HttpResponse) -> Value {
    r.json()["error"].clone()
}

/// Open file descriptors of a process.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The one dead letter in `dir`, after waiting (bounded) for it.
fn the_dead_letter(sluice: &mut Sluice, sb: &Sandbox, dir: &str) -> Value {
    sluice.expect_within(secs(10), &format!("a dead letter in {dir}"), || {
        sb.count(dir) >= 1
    });
    sb.only_json(dir)
}

// ---------------------------------------------------------------------------------------------
// Item 9: credential headers never become metadata
// ---------------------------------------------------------------------------------------------

const STRICT_FLOW: &str = r#"name: strict
trigger:
  http: { path: /strict }
contract:
  input: thing.v1
steps:
  - to: out
sinks:
  out: { file: { path: outbox/strict } }
errors:
  dead_letter_answered: true
  dead_letter: { file: { path: dead-letter/strict } }
"#;

const THING_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id"],
  "properties": { "id": { "type": "string" } }
}"#;

#[test]
fn cookies_and_proxy_credentials_never_reach_dead_letter_meta() {
    let sb = Sandbox::new();
    sb.write("schemas/thing.v1.json", THING_SCHEMA);
    sb.write("flows/strict.yaml", STRICT_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("strict");
    sluice.wait_listener(ports);
    let r = post_json(
        ports.listen,
        "/strict",
        &[
            ("Cookie", "session=cookie-secret-1"),
            ("Set-Cookie", "id=set-cookie-secret-2"),
            ("Proxy-Authorization", "Basic cHJveHktc2VjcmV0LTM="),
            ("Authorization", "Bearer auth-secret-4"),
            ("X-Tenant", "t-1"),
        ],
        &json!({ "no_id": true }),
    );
    assert_eq!(r.status, 422, "{r}");
    let letter = the_dead_letter(&mut sluice, &sb, "dead-letter/strict");
    let meta = &letter["meta"];
    assert_eq!(
        meta["http.header.x-tenant"], "t-1",
        "other headers are copied: {letter:#}"
    );
    for name in [
        "cookie",
        "set-cookie",
        "proxy-authorization",
        "authorization",
    ] {
        assert!(
            meta.get(format!("http.header.{name}")).is_none(),
            "`{name}` is never copied into metadata: {letter:#}"
        );
    }
    let text = letter.to_string();
    for secret in [
        "cookie-secret-1",
        "set-cookie-secret-2",
        "cHJveHktc2VjcmV0LTM",
        "auth-secret-4",
    ] {
        assert!(!text.contains(secret), "{secret} leaks: {letter:#}");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 10: HMAC signatures with a signed timestamp cannot be replayed
// ---------------------------------------------------------------------------------------------

const HOOK_SECRET: &str = "hook-secret-10";

const HOOK_FLOW: &str = r#"name: hook
trigger:
  http:
    path: /hook
    auth:
      hmac:
        secret: "${env:HOOK_SECRET}"
        header: x-signature
        prefix: "sha256="
        timestamp: { header: x-signature-timestamp, tolerance: 60s }
steps:
  - to: out
sinks:
  out: { file: { path: outbox/hook } }
"#;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `sha256=` + HMAC of `<timestamp>.<body>`, as a sender signs.
fn signature(timestamp: u64, body: &[u8]) -> String {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "sha256={}",
        hex(&hmac_sha256(HOOK_SECRET.as_bytes(), &signed))
    )
}

fn post_hook(addr: SocketAddr, timestamp: &str, signature: &str, body: &[u8]) -> HttpResponse {
    http(
        addr,
        "POST",
        "/hook",
        &[
            ("Content-Type", "application/json"),
            ("x-signature", signature),
            ("x-signature-timestamp", timestamp),
        ],
        Some(body),
    )
}

#[test]
fn hmac_timestamps_refuse_stale_and_replayed_requests() {
    let sb = Sandbox::new();
    sb.write("flows/hook.yaml", HOOK_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("HOOK_SECRET", HOOK_SECRET)]);
    sluice.wait_ready("hook");
    sluice.wait_listener(ports);
    let addr = ports.listen;
    let body = br#"{"event":"paid","id":"e-1"}"#;

    // Fresh: signed now, accepted.
    let now = unix_now();
    let r = post_hook(addr, &now.to_string(), &signature(now, body), body);
    assert_eq!(r.status, 200, "a fresh signature is accepted: {r}");

    // Stale: a correct signature from an hour ago (a captured request), refused.
    let old = now - 3600;
    let stale_sig = signature(old, body);
    let r = post_hook(addr, &old.to_string(), &stale_sig, body);
    assert_eq!(r.status, 401, "a stale signature is refused: {r}");
    let error = error_of(&r);
    assert_eq!(error["kind"], "auth", "{r}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("stale") && message.contains("60s"),
        "the 401 says the timestamp is outside the tolerance: {r}"
    );

    // Replay with the timestamp changed to now: the timestamp is signed, so refused.
    let r = post_hook(addr, &unix_now().to_string(), &stale_sig, body);
    assert_eq!(
        r.status, 401,
        "a replay with a new timestamp is refused: {r}"
    );
    assert_eq!(error_of(&r)["message"], "wrong signature", "{r}");

    // A signature of the body alone (no timestamp signed) is refused too.
    let body_only = format!("sha256={}", hex(&hmac_sha256(HOOK_SECRET.as_bytes(), body)));
    let r = post_hook(addr, &unix_now().to_string(), &body_only, body);
    assert_eq!(r.status, 401, "{r}");

    // No timestamp at all.
    let r = http(
        addr,
        "POST",
        "/hook",
        &[
            ("Content-Type", "application/json"),
            ("x-signature", &signature(now, body)),
        ],
        Some(body),
    );
    assert_eq!(r.status, 401, "{r}");
    assert!(
        error_of(&r)["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing signature timestamp")),
        "{r}"
    );
    assert_eq!(
        sb.count("outbox/hook"),
        1,
        "only the fresh request was delivered"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 11: unsigned, unfinished bodies are refused before they are read
// ---------------------------------------------------------------------------------------------

const SIGNED_FLOW: &str = r#"name: signed
trigger:
  http:
    path: /signed
    max_body: 2MiB
    auth: { hmac: { secret: "${env:HOOK_SECRET}" } }
steps:
  - to: out
sinks:
  out: { file: { path: outbox/signed } }
"#;

/// Opens a connection, sends the head of a 1 MiB POST with `headers` and as much of the body
/// as the socket takes without blocking (never all of it), and leaves it unfinished.
fn unfinished_body(addr: SocketAddr, headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, secs(5)).expect("connect");
    let head = format!(
        "POST /signed HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{headers}Content-Length: 1048576\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.set_nonblocking(true).expect("nonblocking");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    // Up to 1 MiB - 1: the body is never complete.
    while sent + chunk.len() < 1024 * 1024 {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    stream.set_nonblocking(false).expect("blocking");
    stream
}

#[test]
fn unsigned_unfinished_bodies_get_401_before_the_body_and_memory_stays_bounded() {
    let sb = Sandbox::alone();
    sb.write("flows/signed.yaml", SIGNED_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("HOOK_SECRET", HOOK_SECRET)]);
    sluice.wait_ready("signed");
    sluice.wait_listener(ports);
    let before = rss_kib(sluice.pid());

    let started = Instant::now();
    let streams: Vec<TcpStream> = (0..300)
        .map(|_| unfinished_body(ports.listen, ""))
        .collect();
    let mut refused = 0;
    for mut stream in streams.iter().map(|s| s.try_clone().expect("clone")) {
        match read_response(&mut stream, secs(10)) {
            Ok(r) if r.status == 401 => {
                assert!(
                    error_of(&r)["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("missing signature")),
                    "{r}"
                );
                refused += 1;
            }
            Ok(r) => panic!("an unsigned request gets 401, not:\n{r}"),
            Err(e) => panic!(
                "no 401 for an unsigned request whose body is unfinished ({e})\n{}",
                sluice.log_tail(20)
            ),
        }
    }
    assert_eq!(refused, 300);
    let after = rss_kib(sluice.pid());
    eprintln!(
        "300 unsigned unfinished 1 MiB bodies: 401 in {:?}; VmRSS {before} KiB -> {after} KiB",
        started.elapsed()
    );
    assert!(
        after < before + 48 * 1024,
        "memory stays bounded: VmRSS {before} KiB before, {after} KiB with 300 unfinished bodies"
    );
    drop(streams);

    // A signed request still works.
    let body = br#"{"ok":true}"#;
    let sig = hex(&hmac_sha256(HOOK_SECRET.as_bytes(), body));
    let r = http(
        ports.listen,
        "POST",
        "/signed",
        &[("Content-Type", "application/json"), ("x-signature", &sig)],
        Some(body),
    );
    assert_eq!(r.status, 200, "{r}");
    sluice.assert_running();
}

#[test]
fn signed_unfinished_bodies_time_out_within_the_body_budget() {
    let sb = Sandbox::alone();
    sb.write("flows/signed.yaml", SIGNED_FLOW);
    sb.write(
        "sluice.yaml",
        "http: { body_timeout: 2s, max_body_in_flight: 16MiB }\n",
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("HOOK_SECRET", HOOK_SECRET)]);
    sluice.wait_ready("signed");
    sluice.wait_listener(ports);
    let before = rss_kib(sluice.pid());
    // A well-formed (wrong) signature: the body has to be read before it can be refused.
    let sig = format!("x-signature: {}\r\n", "ab".repeat(32));
    let streams: Vec<TcpStream> = (0..100)
        .map(|_| unfinished_body(ports.listen, &sig))
        .collect();
    let mut peak = 0;
    let mut answers = Vec::new();
    for mut stream in streams.iter().map(|s| s.try_clone().expect("clone")) {
        peak = peak.max(rss_kib(sluice.pid()));
        answers.push(read_response(&mut stream, secs(15)).map(|r| r.status));
    }
    // 16 of the bodies fit the budget and wait for the rest of their body; the others wait
    // for room. Within `body_timeout` every one is answered: 408 or 503.
    for answer in &answers {
        assert!(
            matches!(answer, Ok(408) | Ok(503)),
            "every unfinished body is answered 408 or 503 within body_timeout: {answers:?}\n{}",
            sluice.log_tail(20)
        );
    }
    assert!(answers.contains(&Ok(408)), "{answers:?}");
    eprintln!("100 signed unfinished bodies: VmRSS {before} KiB -> peak {peak} KiB; {answers:?}");
    assert!(
        peak < before + 48 * 1024,
        "the body budget bounds memory: VmRSS {before} KiB before, peak {peak} KiB"
    );
    drop(streams);
    eprintln!("after the answers: VmRSS {} KiB", rss_kib(sluice.pid()));
    sluice.assert_running();
}

const BIG_FLOW: &str = r#"name: big
trigger:
  http: { path: /big, method: POST, max_body: 8MiB }
steps:
  - set: { n: "length(items)" }
"#;

/// Memory taken by large bodies goes back to the system once they are answered: 32 bodies
/// of 4 MiB at once take VmRSS up by over 100 MiB; within seconds of the last answer it is
/// back near where it started (the runtime threads collect their heaps when they go idle,
/// crates/sluice/src/allocator.rs).
#[test]
fn memory_taken_by_large_bodies_is_returned_once_they_are_answered() {
    let sb = Sandbox::alone();
    sb.write("flows/big.yaml", BIG_FLOW);
    sb.write("sluice.yaml", "http: { max_body_in_flight: 256MiB }\n");
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("big");
    sluice.wait_listener(ports);
    let before = rss_kib(sluice.pid());
    let body = serde_json::to_vec(&json!({ "items": vec!["x".repeat(1000); 4000] })).unwrap();
    let peak = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..32)
            .map(|_| {
                scope.spawn(|| {
                    let headers = [("Content-Type", "application/json")];
                    let r = http(ports.listen, "POST", "/big", &headers, Some(&body));
                    peak.fetch_max(rss_kib(sluice.pid()), std::sync::atomic::Ordering::Relaxed);
                    r.status
                })
            })
            .collect();
        for sender in senders {
            assert_eq!(sender.join().expect("a sender"), 200);
        }
    });
    let peak = peak.into_inner();
    eprintln!("32 bodies of 4 MiB: VmRSS {before} KiB before, {peak} KiB at the answers");
    assert!(
        peak > before + 64 * 1024,
        "the bodies did not take memory: the test measures nothing ({before} -> {peak} KiB)"
    );
    let mut now = peak;
    let back = wait_until(secs(15), || {
        now = rss_kib(sluice.pid());
        now < before + 32 * 1024
    });
    assert!(
        back,
        "VmRSS stayed at {now} KiB, {before} KiB before the bodies (peak {peak} KiB)"
    );
    eprintln!("back to {now} KiB");
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// Item 12: half-sent requests hold neither connections nor file descriptors for long
// ---------------------------------------------------------------------------------------------

const ECHO_FLOW: &str = r#"name: echo
trigger:
  http: { path: /echo }
steps:
  - set: { echoed: "`true`" }
"#;

const DROP_FLOW: &str = r#"name: drop
trigger:
  file:
    path: inbox/drop
    glob: "*.json"
    @FAST@
steps:
  - to: out
sinks:
  out: { file: { path: outbox/drop } }
"#;

#[test]
fn half_sent_requests_are_capped_and_timed_out() {
    let sb = Sandbox::alone();
    sb.write("flows/echo.yaml", ECHO_FLOW);
    sb.write("flows/drop.yaml", DROP_FLOW.replace("@FAST@", FAST_TRIGGER));
    sb.write(
        "sluice.yaml",
        "http: { max_connections: 50, header_timeout: 2s }\n",
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("echo");
    sluice.wait_ready("drop");
    sluice.wait_listener(ports);
    let baseline_fds = open_fds(sluice.pid());

    // 200 connections (four times the cap) that send half a request head and stop.
    let half = format!("POST /echo HTTP/1.1\r\nHost: {}\r\nX-Slow: ", ports.listen);
    let mut attackers: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&ports.listen, secs(5)).expect("connect");
            s.write_all(half.as_bytes()).expect("write half a head");
            s
        })
        .collect();
    let attacked = Instant::now();

    // The process keeps its descriptors: at most the cap of them go to the listener.
    let mut fd_peak = 0;
    for _ in 0..10 {
        fd_peak = fd_peak.max(open_fds(sluice.pid()));
        std::thread::sleep(millis(20));
    }
    assert!(
        fd_peak <= baseline_fds + 50 + 10,
        "the listener holds at most its cap of connections: {fd_peak} fds, {baseline_fds} before"
    );

    // The admin server and the file trigger are not affected.
    let started = Instant::now();
    let health = admin_get(ports, "/healthz", None);
    assert_eq!(health.status, 200, "{health}");
    assert!(
        started.elapsed() < secs(2),
        "healthz took {:?}",
        started.elapsed()
    );
    sb.drop_json("inbox/drop", "d-1.json", &json!({ "id": "d-1" }));
    sluice.expect_within(secs(10), "the file trigger processes a file", || {
        sb.count("outbox/drop") == 1
    });

    // A normal request is answered once the half-sent ones have timed out (bounded).
    let started = Instant::now();
    let r = try_http(
        ports.listen,
        "POST",
        "/echo",
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    )
    .unwrap_or_else(|e| panic!("a normal request during the attack: {e}"));
    assert_eq!(r.status, 200, "{r}");
    assert!(
        started.elapsed() < secs(15),
        "answered within a bounded time: {:?}",
        started.elapsed()
    );

    // Every half-sent connection has been closed by the server after the header timeout.
    let mut closed = 0;
    for stream in &mut attackers {
        stream.set_read_timeout(Some(secs(15))).expect("timeout");
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(_) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(e) => panic!(
                "a half-sent connection is still open after {:?}: {e}",
                attacked.elapsed()
            ),
        }
    }
    assert_eq!(closed, 200);
    eprintln!(
        "200 half-sent requests with a cap of 50: fd peak {fd_peak} (baseline {baseline_fds}), all closed within {:?}",
        attacked.elapsed()
    );
    let pid = sluice.pid();
    // (A few descriptors of the file trigger and the admin server come and go meanwhile.)
    sluice.expect_within(secs(10), "the descriptors are given back", || {
        open_fds(pid) <= baseline_fds + 12
    });
}

// ---------------------------------------------------------------------------------------------
// Item 19: errors answered to the caller are not dead-lettered unless asked for
// ---------------------------------------------------------------------------------------------

const ANSWERED_FLOW: &str = r#"name: @NAME@
trigger:
  http: { path: /@NAME@ }
contract:
  input: ints.v1
steps:
  - to: out
sinks:
  out: { file: { path: outbox/@NAME@ } }
errors:
  @FLAG@
  dead_letter: { file: { path: dead-letter/@NAME@ } }
"#;

#[test]
fn answered_errors_are_dead_lettered_only_with_the_flag_and_bounded() {
    let sb = Sandbox::new();
    sb.write(
        "schemas/ints.v1.json",
        r#"{ "type": "array", "items": { "type": "integer" } }"#,
    );
    for (name, flag) in [
        ("quiet", "retry: { attempts: 1 }"),
        ("kept", "dead_letter_answered: true"),
    ] {
        sb.write(
            &format!("flows/{name}.yaml"),
            ANSWERED_FLOW
                .replace("@NAME@", name)
                .replace("@FLAG@", flag),
        );
    }
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("quiet");
    sluice.wait_ready("kept");
    sluice.wait_listener(ports);
    // 1,000 violations in one body.
    let bad = json!(
        (0..1000)
            .map(|i| format!("not-an-int-{i}"))
            .collect::<Vec<_>>()
    );

    // Default: the 422 goes to the caller, nothing to the dead letter. The dead letter is
    // written before the answer, so it would be there by now.
    for _ in 0..5 {
        let r = post_json(ports.listen, "/quiet", &[], &bad);
        assert_eq!(r.status, 422, "{r}");
        let shown = error_of(&r)["violations"].as_array().map_or(0, Vec::len);
        assert!(
            shown <= 100,
            "the 422 lists at most 100 violations, not {shown}"
        );
    }
    assert_eq!(
        sb.count("dead-letter/quiet"),
        0,
        "an error answered to the caller is not dead-lettered by default"
    );

    // With `dead_letter_answered: true`: kept, and bounded.
    let r = post_json(ports.listen, "/kept", &[], &bad);
    assert_eq!(r.status, 422, "{r}");
    let letter = the_dead_letter(&mut sluice, &sb, "dead-letter/kept");
    assert_eq!(letter["message"], bad, "the original message is kept");
    let violations = letter["error"]["violations"]
        .as_array()
        .expect("violations");
    assert_eq!(violations.len(), 100, "the entry keeps 100 violations");
    assert!(
        letter["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1000 violations")),
        "the message still gives the full count: {}",
        letter["error"]
    );
}

// ---------------------------------------------------------------------------------------------
// Item 20: a 504 before the sinks cancels the message; after, it says the outcome is unknown
// ---------------------------------------------------------------------------------------------

const SLOW_STEP_FLOW: &str = r#"name: slow-step
trigger:
  http: { path: /slow-step, timeout: 300ms }
steps:
  - enrich: { url: "@URL@/slow", into: extra, timeout: 5s }
  - to: out
sinks:
  out: { file: { path: outbox/slow-step } }
"#;

const SLOW_SINK_FLOW: &str = r#"name: slow-sink
trigger:
  http: { path: /slow-sink, timeout: 300ms }
steps:
  - to: out
sinks:
  out: { file: { path: outbox/slow-sink, name: "{{meta('message_id')}}.json" } }
"#;

#[test]
fn a_504_cancels_before_the_sinks_or_says_the_outcome_is_unknown() {
    let slow = TestServer::start(|_, _| {
        std::thread::sleep(millis(1500));
        Answer::json(200, &json!({ "late": true }))
    });
    let sb = Sandbox::new();
    sb.write(
        "flows/slow-step.yaml",
        SLOW_STEP_FLOW.replace("@URL@", &slow.url("")),
    );
    sb.write("flows/slow-sink.yaml", SLOW_SINK_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("SLUICE_TEST_SINK_DELAY", "1500ms")]);
    sluice.wait_ready("slow-step");
    sluice.wait_ready("slow-sink");
    sluice.wait_listener(ports);

    // The steps outlast the timeout: 504, and the sink never writes the message.
    let mark = sluice.mark();
    let r = post_json(ports.listen, "/slow-step", &[], &json!({ "id": "s-1" }));
    assert_eq!(r.status, 504, "{r}");
    let error = error_of(&r);
    assert_eq!(error["outcome"], "not_delivered", "{r}");
    let id = error["message_id"].as_str().expect("message_id").to_owned();
    sluice.wait_for_line_since(
        mark,
        "the message is cancelled before its sink",
        secs(10),
        |l| l.contains("cancelled before any sink") && l.contains(&id),
    );
    assert_eq!(slow.count(), 1, "the enrich call was made");
    assert_eq!(
        sb.count("outbox/slow-step"),
        0,
        "a message answered 504 before its sinks is never written"
    );

    // The sink outlasts the timeout: 504 with the message id and an unknown outcome.
    let r = post_json(ports.listen, "/slow-sink", &[], &json!({ "id": "s-2" }));
    assert_eq!(r.status, 504, "{r}");
    let error = error_of(&r);
    assert_eq!(error["outcome"], "unknown", "{r}");
    let id = error["message_id"].as_str().expect("message_id").to_owned();
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown") && m.contains(&format!("Idempotency-Key: {id}"))),
        "the 504 says the outcome is unknown and how to retry: {r}"
    );
    assert_eq!(r.header("x-message-id"), Some(id.as_str()), "{r}");
    // It was under way, so it completes (exactly once), under the id the caller was given.
    let written = sluice.wait_json(&sb, &format!("outbox/slow-sink/{id}.json"), secs(10));
    assert_eq!(written, json!({ "id": "s-2" }));
}
