//! Graceful shutdown: SIGTERM during a load of HTTP requests answers every request that was
//! sent before the signal and exits 0 within the grace period; SIGTERM while a file flow drains
//! exits 0 and loses no file.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use crate::support::*;
use serde_json::Value;

/// Some real work per message: a busy loop in Rhai (limits raised for it).
const WORK_FLOW: &str = r#"name: work
concurrency: 4
script_limits: { deadline: 10s, max_operations: 100000000 }
trigger:
  http: { path: /work, method: POST }
steps:
  - script: |
      let x = 0;
      for i in 0..@LOOPS@ { x += i; }
      payload.x = x;
      payload.done = true;
"#;

const LOOPS: &str = "60000";

/// One request of the load.
struct Shot {
    n: u64,
    /// When the whole request had been written (None: it was not).
    sent: Option<Instant>,
    answered: Instant,
    outcome: Result<HttpResponse, String>,
}

fn shoot(addr: SocketAddr, n: u64) -> Shot {
    let body = json!({ "n": n }).to_string();
    let bytes = request_bytes(
        addr,
        "POST",
        "/work",
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    let mut sent = None;
    let outcome = (|| {
        let mut stream =
            TcpStream::connect_timeout(&addr, secs(5)).map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(secs(10))).ok();
        stream
            .write_all(&bytes)
            .map_err(|e| format!("write: {e}"))?;
        sent = Some(Instant::now());
        read_response(&mut stream, secs(30))
    })();
    Shot {
        n,
        sent,
        answered: Instant::now(),
        outcome,
    }
}

#[test]
fn sigterm_during_http_load_answers_every_request_sent_before_it_and_exits_0() {
    let sb = Sandbox::new();
    sb.write("flows/work.yaml", WORK_FLOW.replace("@LOOPS@", LOOPS));
    let (mut sluice, ports) = Sluice::serve(&sb, &["--shutdown-grace", "10s"], &[]);
    sluice.wait_ready("work");
    sluice.wait_listener(ports);
    let addr = ports.listen;
    let probe = shoot(addr, 0);
    let r = probe
        .outcome
        .unwrap_or_else(|e| panic!("first request: {e}"));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["done"], true, "{r}");

    let shots = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut signal_at = None;
    let mut exit = None;
    thread::scope(|scope| {
        for t in 0..6u64 {
            let (shots, stop) = (&shots, &stop);
            scope.spawn(move || {
                let mut n = (t + 1) * 1_000_000;
                while !stop.load(Ordering::SeqCst) {
                    let shot = shoot(addr, n);
                    let refused = shot.sent.is_none();
                    shots.lock().unwrap().push(shot);
                    if refused {
                        // The listener is gone; back off a little, and stop when told.
                        thread::sleep(millis(20));
                    }
                    n += 1;
                }
            });
        }
        thread::sleep(millis(1500));
        signal_at = Some(Instant::now());
        sluice.signal(libc::SIGTERM);
        exit = sluice.wait_exit(secs(15));
        stop.store(true, Ordering::SeqCst);
    });
    let signal_at = signal_at.unwrap();
    let status = exit.unwrap_or_else(|| {
        panic!(
            "sluice did not exit within the 10s grace (+5s)\n--- log tail ---\n{}",
            sluice.log_tail(40)
        )
    });
    let exited_after = signal_at.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit code after SIGTERM ({status:?})\n--- log tail ---\n{}",
        sluice.log_tail(40)
    );

    let shots = shots.into_inner().unwrap();
    let before: Vec<&Shot> = shots
        .iter()
        .filter(|s| s.sent.is_some_and(|t| t < signal_at))
        .collect();
    let in_flight = before.iter().filter(|s| s.answered > signal_at).count();
    eprintln!(
        "{} requests, {} sent before SIGTERM, {in_flight} of them in flight at the signal; exited after {exited_after:?}",
        shots.len(),
        before.len()
    );
    assert!(before.len() > 10, "the load ran before the signal");
    assert!(
        in_flight >= 1,
        "test precondition: some requests were in flight when SIGTERM came"
    );
    let mut bad = Vec::new();
    for s in &before {
        match &s.outcome {
            Ok(r) if r.status == 200 => {
                let v: Value = r.json();
                if v["n"] != s.n || v["done"] != true {
                    bad.push(format!("n={}: wrong body {v}", s.n));
                }
            }
            Ok(r) => bad.push(format!("n={}: status {} {}", s.n, r.status, r.text())),
            Err(e) => bad.push(format!(
                "n={}: {e} (sent {:?} before the signal)",
                s.n,
                signal_at - s.sent.unwrap()
            )),
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} requests sent before SIGTERM were not answered with 200: {:#?}\n--- log tail ---\n{}",
        bad.len(),
        before.len(),
        &bad[..bad.len().min(10)],
        sluice.log_tail(40)
    );
    // After the signal the listener stops accepting: connections are refused (or, when one got
    // through, it is answered completely) — nothing hangs, nothing is half an answer.
    for s in shots
        .iter()
        .filter(|s| s.sent.is_some_and(|t| t >= signal_at))
    {
        if let Err(e) = &s.outcome {
            assert!(
                !e.contains("closed after") && !e.contains("inside a chunked"),
                "n={}: a half answer after the signal: {e}",
                s.n
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A file flow mid-drain
// ---------------------------------------------------------------------------------------------

const DRAIN_FLOW: &str = r#"name: drain
concurrency: 2
script_limits: { deadline: 10s, max_operations: 100000000 }
trigger:
  file:
    path: inbox/drain
    glob: "*.json"
    @FAST@
    max_in_flight: 4
steps:
  - script: |
      let x = 0;
      for i in 0..@LOOPS@ { x += i; }
      payload.x = x;
  - to: out
sinks:
  out:
    file: { path: outbox/drain, name: "{{id}}.json" }
"#;

#[test]
fn sigterm_mid_file_drain_exits_0_and_loses_no_file() {
    const N: usize = 200;
    let sb = Sandbox::new();
    sb.write(
        "flows/drain.yaml",
        DRAIN_FLOW
            .replace("@FAST@", FAST_TRIGGER)
            .replace("@LOOPS@", LOOPS),
    );
    let names: Vec<String> = (0..N).map(|i| format!("f-{i:03}.json")).collect();
    for (i, name) in names.iter().enumerate() {
        sb.drop_json("inbox/drain", name, &json!({ "id": format!("f-{i:03}") }));
    }

    let (mut sluice, _ports) = Sluice::serve(&sb, &["--shutdown-grace", "10s"], &[]);
    sluice.wait_ready("drain");
    sluice.expect_within(secs(60), "the first outputs", || {
        sb.count("outbox/drain") >= 5
    });
    let done_at_signal = sb.count("inbox/drain/.done");
    let signal_at = Instant::now();
    sluice.signal(libc::SIGTERM);
    let status = sluice.wait_exit(secs(15)).unwrap_or_else(|| {
        panic!(
            "sluice did not exit within the 10s grace (+5s)\n--- log tail ---\n{}",
            sluice.log_tail(40)
        )
    });
    eprintln!("exited {:?} after SIGTERM", signal_at.elapsed());
    assert_eq!(
        status.code(),
        Some(0),
        "exit code after SIGTERM ({status:?})\n--- log tail ---\n{}",
        sluice.log_tail(40)
    );

    let waiting = sb.names("inbox/drain");
    let inflight = sb.names("inbox/drain/.inflight");
    let done = sb.names("inbox/drain/.done");
    eprintln!(
        "after SIGTERM: {} done, {} in .inflight, {} still waiting",
        done.len(),
        inflight.len(),
        waiting.len()
    );
    assert_eq!(sb.count("inbox/drain/.error"), 0, "nothing in .error/");
    assert_eq!(
        sb.count("inbox/drain/.rejected"),
        0,
        "nothing in .rejected/"
    );
    for name in &names {
        let places = [&waiting, &inflight, &done]
            .iter()
            .filter(|set| set.contains(name))
            .count();
        assert_eq!(
            places, 1,
            "{name} is in exactly one of inbox/, .inflight/, .done/ (found in {places})"
        );
    }
    assert!(
        done_at_signal + 20 < N,
        "test precondition: SIGTERM came well before the folder was drained ({done_at_signal} of {N} done)"
    );
    // The trigger stops at the signal: it claims nothing new. What finishes afterwards is at
    // most what was claimed then (max_in_flight: 4), plus a little for the race between reading
    // the count and the signal. Everything else stays where it is.
    let finished_after = done.len().saturating_sub(done_at_signal);
    assert!(
        finished_after <= 4 + 2,
        "{finished_after} files were finished after SIGTERM ({done_at_signal} done at the signal, {} at exit, max_in_flight 4): the trigger kept claiming files instead of stopping",
        done.len()
    );
    for name in &done {
        assert!(
            sb.exists(&format!("outbox/drain/{name}")),
            "{name} is done, so its output exists"
        );
    }

    // The next start takes over what was left; every file ends up done with one output.
    let (mut again, _ports) = Sluice::serve(&sb, &[], &[]);
    again.wait_ready("drain");
    again.expect_within(secs(120), "every file in .done/", || {
        sb.count("inbox/drain/.done") == N
    });
    assert_eq!(
        sb.names("inbox/drain/.done"),
        names.iter().cloned().collect()
    );
    assert_eq!(sb.count("outbox/drain"), N, "exactly one output per file");
    assert_eq!(sb.count("inbox/drain/.inflight"), 0);
}
