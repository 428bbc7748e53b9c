//! `sluice tap`: the messages passing a flow of a running process, per step, streamed from
//! the admin server; `${env:…}` values and credential headers redacted; behind the token.

use crate::support::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SECRET: &str = "tap-secret-value-42";
const TOKEN: &str = "tap-adm-t0ken";

const TAPS_FLOW: &str = r#"name: taps
trigger:
  http: { path: /tap-in, method: POST }
steps:
  - name: mark
    set:
      marked: "`true`"
      secret: "'${env:TAP_SECRET}'"
  - script: "payload.n = payload.n + 1;"
"#;

/// A running `sluice tap`: its stdout lines arrive on a channel; killed by PID on drop.
struct Tap {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Tap {
    fn start(sb: &Sandbox, ports: Ports, args: &[&str]) -> Tap {
        let admin = ports.admin.to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["tap", "--admin", &admin, "--admin-token", TOKEN])
            .args(args)
            .current_dir(sb.root())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice tap starts");
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let tap = Tap {
            child,
            lines,
            stderr,
        };
        let started = wait_until(secs(20), || tap.stderr().contains("tapping flow"));
        assert!(started, "sluice tap did not connect: {}", tap.stderr());
        tap
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn next(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("no tap line within {timeout:?}: {}", self.stderr()))
    }

    /// Waits for the process to end by itself (its `--limit`).
    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "sluice tap did not stop at its limit: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

#[test]
fn tap_streams_each_step_redacted_and_stops_at_its_limit() {
    let sb = Sandbox::new();
    sb.write("flows/taps.yaml", TAPS_FLOW);
    let (mut sluice, ports) =
        Sluice::serve(&sb, &["--admin-token", TOKEN], &[("TAP_SECRET", SECRET)]);
    sluice.wait_ready("taps");
    sluice.wait_listener(ports);

    let mut tap = Tap::start(&sb, ports, &["taps", "--json", "--limit", "3"]);
    let r = post_json(
        ports.listen,
        "/tap-in",
        &[("x-api-token", "hunter2-secret"), ("x-plain", "visible")],
        &json!({"n": 1}),
    );
    assert_eq!(r.status, 200, "{r}");
    let samples: Vec<Value> = (0..3)
        .map(|_| serde_json::from_str(&tap.next(secs(10))).expect("a JSON line"))
        .collect();
    assert_eq!(tap.wait_exit(secs(10)), 0, "{}", tap.stderr());
    let steps: Vec<&str> = samples
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["input", "mark", "steps[1] (script)"],
        "{samples:#?}"
    );
    assert_eq!(samples[0]["payload"], json!({"n": 1}));
    assert_eq!(samples[1]["payload"]["marked"], true);
    assert_eq!(samples[1]["payload"]["secret"], "***", "{:#}", samples[1]);
    assert_eq!(samples[2]["payload"]["n"], 2);
    let message_id = samples[0]["message_id"].as_str().expect("an id");
    assert!(samples.iter().all(|s| s["message_id"] == message_id));
    assert!(
        samples
            .iter()
            .all(|s| s["flow"] == "taps" && s["lost"] == 0)
    );
    let meta = &samples[0]["meta"];
    assert_eq!(meta["http.header.x-api-token"], "***", "{meta:#}");
    assert_eq!(meta["http.header.x-plain"], "visible", "{meta:#}");
    let all = samples.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(SECRET) && !all.contains("hunter2"), "{all}");

    // One step, as text.
    let mut one = Tap::start(&sb, ports, &["taps", "--step", "mark", "--limit", "1"]);
    let r = post_json(ports.listen, "/tap-in", &[], &json!({"n": 5}));
    assert_eq!(r.status, 200, "{r}");
    let line = one.next(secs(10));
    assert!(
        line.contains(" mark ") && line.contains("\"marked\":true"),
        "{line}"
    );
    assert!(!line.contains(SECRET), "{line}");
    assert_eq!(one.wait_exit(secs(10)), 0);

    // Without the token: refused like every admin request; an unknown flow is named.
    let r = admin_get(ports, "/api/flows/taps/tap", None);
    assert_eq!(r.status, 401, "{r}");
    let r = admin_get(ports, "/api/flows/nope/tap", Some(TOKEN));
    assert_eq!(r.status, 404, "{r}");
    let r = admin_get(ports, "/api/flows/taps/tap?sample=0", Some(TOKEN));
    assert_eq!(r.status, 400, "{r}");
    sluice.assert_running();
}

#[test]
fn a_tap_that_nobody_reads_never_slows_the_flow() {
    let sb = Sandbox::new();
    sb.write("flows/taps.yaml", TAPS_FLOW);
    let (mut sluice, ports) =
        Sluice::serve(&sb, &["--admin-token", TOKEN], &[("TAP_SECRET", SECRET)]);
    sluice.wait_ready("taps");
    sluice.wait_listener(ports);
    // A reader that opens the stream and never reads from it.
    let mut stalled = std::net::TcpStream::connect(ports.admin).expect("connect");
    use std::io::Write;
    write!(
        stalled,
        "GET /api/flows/taps/tap HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        ports.admin
    )
    .expect("request");
    let big = "x".repeat(64 * 1024);
    let started = Instant::now();
    for n in 0..400 {
        let r = post_json(ports.listen, "/tap-in", &[], &json!({"n": n, "pad": big}));
        assert_eq!(r.status, 200, "{r}");
    }
    let took = started.elapsed();
    assert!(took < secs(60), "400 requests took {took:?}");
    // The samples it could not take are counted.
    let lost = wait_until(secs(10), || {
        scrape_with(ports, Some(TOKEN)).count("sluice_tap_lost_total", &[("flow", "taps")]) > 0.0
    });
    assert!(lost, "no lost samples counted:\n{}", sluice.log_tail(20));
    drop(stalled);
    sluice.assert_running();
}
