//! Hot reload of `http` flows: saving a flow while requests stream in fails none of them and
//! switches the answers to the new version; a broken save changes nothing and shows in the admin
//! API; routes come and go without restarting the listener.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use crate::support::*;
use serde_json::Value;

const ECHO_FLOW: &str = r#"name: echo
trigger:
  http: { path: /echo, method: POST }
steps:
  - set:
      version: @EXPR@
"#;

fn echo_flow(expr: &str) -> String {
    ECHO_FLOW.replace("@EXPR@", expr)
}

/// One request of the load: when it started and ended, and its outcome
/// (`Ok(version)` for a 200 whose body echoes the input, else `Err(description)`).
struct Shot {
    started: Instant,
    ended: Instant,
    outcome: Result<String, String>,
}

fn shoot(addr: std::net::SocketAddr, path: &str, n: usize) -> Shot {
    let started = Instant::now();
    let body = json!({ "n": n });
    let result = try_http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    let ended = Instant::now();
    let outcome = match result {
        Err(e) => Err(format!("transport: {e}")),
        Ok(r) if r.status != 200 => Err(format!("status {}: {}", r.status, r.text())),
        Ok(r) => match serde_json::from_slice::<Value>(&r.body) {
            Ok(v) if v["n"] == n => match v["version"].as_str() {
                Some(version) => Ok(version.to_owned()),
                None => Err(format!("no version: {v}")),
            },
            Ok(v) => Err(format!("not the echo of n={n}: {v}")),
            Err(e) => Err(format!("not JSON ({e}): {}", r.text())),
        },
    };
    Shot {
        started,
        ended,
        outcome,
    }
}

/// Runs `threads` clients posting to `path` until `stop`; returns every shot.
fn load(
    addr: std::net::SocketAddr,
    path: &'static str,
    threads: usize,
    stop: &AtomicBool,
) -> Vec<Shot> {
    let shots = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for t in 0..threads {
            let shots = &shots;
            scope.spawn(move || {
                let mut n = t * 1_000_000;
                while !stop.load(Ordering::SeqCst) {
                    let shot = shoot(addr, path, n);
                    shots.lock().unwrap().push(shot);
                    n += 1;
                    // A steady load, not a flood of sockets.
                    thread::sleep(millis(2));
                }
            });
        }
    });
    shots.into_inner().unwrap()
}

#[test]
fn editing_the_flow_under_load_fails_no_request_and_switches_the_answers() {
    let sb = Sandbox::new();
    sb.write("flows/echo.yaml", echo_flow("\"'v1'\""));
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("echo");
    sluice.wait_listener(ports);
    let addr = ports.listen;
    let first = shoot(addr, "/echo", 0);
    assert_eq!(
        first.outcome,
        Ok("v1".to_owned()),
        "{}",
        sluice.log_tail(30)
    );
    let version_v1 = admin_flow(ports, "echo")["version"].clone();
    assert!(!version_v1.is_null(), "/api/flows/echo has a version");

    let stop = AtomicBool::new(false);
    let mut reloaded_at = None;
    let shots = thread::scope(|scope| {
        let load = scope.spawn(|| load(addr, "/echo", 4, &stop));
        let started = Instant::now();
        thread::sleep(millis(1200));
        let mark = sluice.mark();
        sb.write("flows/echo.yaml", echo_flow("\"'v2'\""));
        sluice.wait_for_line_since(mark, "`flow reloaded` for flow=echo", secs(20), |l| {
            l.contains("flow reloaded") && has_flow(l, "echo")
        });
        reloaded_at = Some(Instant::now());
        // Keep the load going for ~4 s in all, and at least 1 s after the reload.
        let until = (started + secs(4)).max(Instant::now() + secs(1));
        thread::sleep(until.saturating_duration_since(Instant::now()));
        stop.store(true, Ordering::SeqCst);
        load.join().unwrap()
    });
    let reloaded_at = reloaded_at.unwrap();

    let failures: Vec<&String> = shots
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    let v1 = shots
        .iter()
        .filter(|s| s.outcome == Ok("v1".into()))
        .count();
    let v2 = shots
        .iter()
        .filter(|s| s.outcome == Ok("v2".into()))
        .count();
    eprintln!(
        "{} requests: v1 {v1}, v2 {v2}, failed {}",
        shots.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the reload, e.g. {:?}\n--- log tail ---\n{}",
        failures.len(),
        shots.len(),
        &failures[..failures.len().min(5)],
        sluice.log_tail(40)
    );
    assert_eq!(v1 + v2, shots.len(), "every answer is v1 or v2");
    assert!(v1 > 0, "some requests were answered by v1");
    assert!(v2 > 0, "some requests were answered by v2");
    for s in &shots {
        if s.started > reloaded_at {
            assert_eq!(
                s.outcome,
                Ok("v2".to_owned()),
                "a request sent after `flow reloaded` was answered by v1"
            );
        }
    }
    // No flapping: once a v2 answer arrived, no later request gets v1.
    let first_v2_end = shots
        .iter()
        .filter(|s| s.outcome == Ok("v2".into()))
        .map(|s| s.ended)
        .min()
        .unwrap();
    for s in &shots {
        if s.started > first_v2_end {
            assert_eq!(
                s.outcome,
                Ok("v2".to_owned()),
                "a request sent after a v2 answer was answered by v1"
            );
        }
    }
    let flow = admin_flow(ports, "echo");
    let version_v2 = flow["version"].clone();
    assert_ne!(version_v2, version_v1, "the version changed: {flow:#}");
    assert_eq!(flow["state"], "running", "{flow:#}");

    // A broken save (bad JMESPath): nothing changes, the error shows with file:line:col.
    let expr = "'v3' ||";
    let broken = echo_flow(&format!("\"{expr}\""));
    let mark = sluice.mark();
    sb.write("flows/echo.yaml", &broken);
    let line = sluice.wait_for_line_since(
        mark,
        "`reload failed` naming flows/echo.yaml:<line>:<col>",
        secs(20),
        |l| l.contains("reload failed") && !positions(l, "flows/echo.yaml").is_empty(),
    );
    eprintln!("broken save: {line}");
    let mut flow = Value::Null;
    let shown = wait_until(secs(5), || {
        flow = admin_flow(ports, "echo");
        flow["last_error"].is_string()
    });
    assert!(shown, "last_error is set after a broken save: {flow:#}");
    let last_error = flow["last_error"].as_str().unwrap();
    let found = positions(last_error, "flows/echo.yaml");
    assert!(
        !found.is_empty(),
        "last_error names flows/echo.yaml:<line>:<col>: {last_error}"
    );
    assert_eq!(
        found[0].0,
        line_of(&broken, expr),
        "last_error points at the line of the expression: {last_error}"
    );
    assert_eq!(
        flow["state"], "running",
        "the old version runs on: {flow:#}"
    );
    assert_eq!(
        flow["version"], version_v2,
        "the version did not change: {flow:#}"
    );
    assert_eq!(flow["name"], "echo", "{flow:#}");

    // The old version keeps answering, nothing fails.
    for n in 0..20 {
        let s = shoot(addr, "/echo", n);
        assert_eq!(s.outcome, Ok("v2".to_owned()), "after the broken save");
    }
    let m = scrape(ports);
    assert!(
        m.count("sluice_reloads_total", &[("result", "ok")]) >= 1.0,
        "sluice_reloads_total{{result=\"ok\"}} counts the good reload"
    );
    assert!(
        m.count("sluice_reloads_total", &[("result", "error")]) >= 1.0,
        "sluice_reloads_total{{result=\"error\"}} counts the broken save"
    );

    // The fix goes live.
    let mark = sluice.mark();
    sb.write("flows/echo.yaml", echo_flow("\"'v4'\""));
    sluice.wait_for_line_since(mark, "`flow reloaded` for flow=echo", secs(20), |l| {
        l.contains("flow reloaded") && has_flow(l, "echo")
    });
    assert_eq!(shoot(addr, "/echo", 1).outcome, Ok("v4".to_owned()));
    sluice.assert_running();
}

fn path_flow(name: &str, path: &str, tag: &str) -> String {
    format!(
        "name: {name}\ntrigger:\n  http: {{ path: {path}, method: POST }}\nsteps:\n  - set:\n      version: \"'{tag}'\"\n"
    )
}

#[test]
fn routes_come_and_go_without_restarting_the_listener() {
    let sb = Sandbox::new();
    sb.write("flows/keep.yaml", path_flow("keep", "/keep", "k"));
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("keep");
    sluice.wait_listener(ports);
    let addr = ports.listen;

    let stop = AtomicBool::new(false);
    let shots = thread::scope(|scope| {
        let load = scope.spawn(|| load(addr, "/keep", 2, &stop));

        // Added.
        let mark = sluice.mark();
        sb.write("flows/extra.yaml", path_flow("extra", "/extra", "e1"));
        sluice.wait_for_line_since(mark, "`flow ready` for flow=extra", secs(20), |l| {
            l.contains("flow ready") && has_flow(l, "extra")
        });
        assert_eq!(shoot(addr, "/extra", 1).outcome, Ok("e1".to_owned()));

        // Moved to another path.
        let mark = sluice.mark();
        sb.write("flows/extra.yaml", path_flow("extra", "/extra2", "e2"));
        sluice.wait_for_line_since(mark, "`flow reloaded` for flow=extra", secs(20), |l| {
            l.contains("flow reloaded") && has_flow(l, "extra")
        });
        assert_eq!(shoot(addr, "/extra2", 2).outcome, Ok("e2".to_owned()));
        let r = post_json(addr, "/extra", &[], &json!({ "n": 3 }));
        assert_eq!(r.status, 404, "the old path is gone:\n{r}");

        // Removed.
        let mark = sluice.mark();
        sb.remove("flows/extra.yaml");
        sluice.wait_for_line_since(mark, "`flow stopped` for flow=extra", secs(20), |l| {
            l.contains("flow stopped") && has_flow(l, "extra")
        });
        let gone = wait_until(secs(5), || {
            post_json(addr, "/extra2", &[], &json!({ "n": 4 })).status == 404
        });
        assert!(gone, "a removed flow's route answers 404");

        thread::sleep(millis(300));
        stop.store(true, Ordering::SeqCst);
        load.join().unwrap()
    });

    let failures: Vec<&String> = shots
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests to the untouched flow failed, e.g. {:?}",
        failures.len(),
        shots.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(shots.len() > 10, "the load ran ({} requests)", shots.len());
    assert!(shots.iter().all(|s| s.outcome == Ok("k".into())));
    let listeners = sluice
        .log()
        .lines()
        .filter(|l| l.contains("http listener on"))
        .count();
    assert_eq!(
        listeners,
        1,
        "the listener was started once:\n{}",
        sluice.log_tail(40)
    );
    sluice.assert_running();
}
