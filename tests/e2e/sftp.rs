//! The `sftp` trigger and sink end to end, against a private OpenSSH server
//! (`support::sftp::Sshd`: its own port, generated host and user keys, chrooted): a thousand
//! files delivered with their outcomes and sidecars on the server, a SIGKILL mid-drain and
//! a restart, an sshd restart mid-drain, wrong and unknown host keys refused, and two
//! processes on one folder taking each file once.

use crate::support::sftp::{Sshd, sshd_available};
use crate::support::*;
use std::collections::BTreeSet;
use std::path::Path;

/// The trigger's keys for a quick test: files are taken as soon as they are seen twice.
const QUICK: &str = "min_age: 0s, check_interval: 50ms, stable_checks: 1, poll_interval: 100ms";

fn drop_orders(sshd: &Sshd, range: std::ops::Range<usize>) {
    for i in range {
        let body = format!("{{\"id\": \"o-{i}\", \"qty\": {i}}}");
        atomic_write(&sshd.path(&format!("inbox/o-{i}.json")), body.as_bytes());
    }
}

/// The `.json` names in a folder, without sidecars and temporary names.
fn json_names(dir: &Path) -> BTreeSet<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".json") && !n.ends_with(".error.json"))
        .collect()
}

fn expected(n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("o-{i}.json")).collect()
}

#[test]
fn sftp_delivers_a_thousand_files_with_outcomes_and_sidecars_on_the_server() {
    if !sshd_available() {
        return;
    }
    const N: usize = 1000;
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    sb.write(
        "schemas/order.json",
        r#"{"type": "object", "required": ["id"]}"#,
    );
    sb.write(
        "flows/pull.yaml",
        format!(
            r#"name: pull
trigger:
  sftp: {{ url: "{inbox}", {login}, glob: "*.json", {QUICK} }}
contract:
  input: order
steps:
  - set: {{ via: "meta('file.name')" }}
  - to: out
sinks:
  out:
    sftp: {{ url: "{outbox}", {login}, name: "{{{{id}}}}.json" }}
"#,
            inbox = sshd.url("inbox"),
            outbox = sshd.url("outbox"),
            login = sshd.login("known_hosts"),
        ),
    );
    drop_orders(&sshd, 0..N);
    atomic_write(&sshd.path("inbox/no-id.json"), br#"{"qty": 1}"#);
    atomic_write(&sshd.path("inbox/broken.json"), b"{\"id\": ");
    atomic_write(&sshd.path("inbox/skipped.txt"), b"not taken: glob");
    atomic_write(&sshd.path("inbox/evil.json"), br#"{"id": "../evil"}"#);
    // The sink's `on_conflict: suffix`: other content is kept, the same content is a
    // redelivery.
    atomic_write(&sshd.path("outbox/o-5.json"), b"someone else's");
    atomic_write(
        &sshd.path("outbox/o-6.json"),
        br#"{"id":"o-6","qty":6,"via":"o-6.json"}"#,
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("pull");
    let started = std::time::Instant::now();
    let outbox = sshd.path("outbox");
    sluice.expect_within(secs(180), "every order written to the outbox", || {
        json_names(&outbox).len() == N + 1
    });
    eprintln!("sftp: {N} files in {:.1?}", started.elapsed());
    sluice.expect_within(secs(30), "every file in .done/", || {
        json_names(&sshd.path("inbox/.done")).len() == N
    });
    let mut written = expected(N);
    written.insert("o-5-1.json".to_owned());
    assert_eq!(json_names(&outbox), written);
    assert_eq!(json_names(&sshd.path("inbox/.done")), expected(N));
    assert_eq!(
        std::fs::read(outbox.join("o-5.json")).unwrap(),
        b"someone else's"
    );
    let order = read_json(&outbox.join("o-7.json"));
    assert_eq!(order, json!({"id": "o-7", "qty": 7, "via": "o-7.json"}));
    // The contract violation and the malformed file, each with its sidecar.
    sluice.expect_within(secs(30), "the rejected and the failed file placed", || {
        sshd.path("inbox/.rejected/no-id.json.error.json").exists()
            && sshd.path("inbox/.error/broken.json.error.json").exists()
    });
    let rejected = read_json(&sshd.path("inbox/.rejected/no-id.json.error.json"));
    assert_eq!(rejected["kind"], "contract", "{rejected}");
    assert_eq!(rejected["file"], "no-id.json");
    let failed = read_json(&sshd.path("inbox/.error/broken.json.error.json"));
    assert_eq!(failed["kind"], "trigger", "{failed}");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.contains("line 1"), "{failed}");
    assert!(sshd.path("inbox/.rejected/no-id.json").exists());
    // A name that would leave the sink's folder is refused, and the file kept.
    sluice.expect_within(secs(30), "the file with a bad name placed", || {
        sshd.path("inbox/.error/evil.json.error.json").exists()
    });
    let evil = read_json(&sshd.path("inbox/.error/evil.json.error.json"));
    assert_eq!(evil["kind"], "sink", "{evil}");
    assert!(!sshd.path("evil").exists() && !sshd.path("inbox/evil").exists());
    assert!(sshd.path("inbox/.error/broken.json").exists());
    // Nothing held, nothing half-written, the other file untouched.
    assert_eq!(count_files(&sshd.path("inbox/.inflight")), 0);
    let leftovers: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert!(sshd.path("inbox/skipped.txt").exists());
    // The key is a file path, the host key is checked: nothing secret is logged.
    sluice.assert_running();
}

/// A flow whose sink is a slow local folder (`SLUICE_TEST_SINK_DELAY`), so that a drain
/// takes long enough to be interrupted.
fn slow_flow(sshd: &Sshd, out: &str) -> String {
    format!(
        r#"name: pull
trigger:
  sftp: {{ url: "{inbox}", {login}, glob: "*.json", lease: 3s, max_in_flight: 16, {QUICK} }}
steps:
  - to: out
sinks:
  out:
    file: {{ path: "{out}", name: "{{{{id}}}}.json" }}
"#,
        inbox = sshd.url("inbox"),
        login = sshd.login("known_hosts"),
    )
}

const SLOW: [(&str, &str); 1] = [("SLUICE_TEST_SINK_DELAY", "10ms")];

#[test]
fn sftp_sigkill_mid_drain_and_restart_loses_nothing() {
    if !sshd_available() {
        return;
    }
    const N: usize = 400;
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    sb.write("flows/pull.yaml", slow_flow(&sshd, "out"));
    drop_orders(&sshd, 0..N);
    let mut sluice = Sluice::start_with_env(&sb, &["run", "--admin", "off"], &SLOW);
    sluice.expect_within(secs(60), "some orders written", || sb.count("out") >= 60);
    sluice.kill();
    let held = count_files(&sshd.path("inbox/.inflight"));
    eprintln!(
        "sftp: killed with {} of {N} written, {held} files in .inflight/",
        sb.count("out")
    );
    assert!(held > 0, "the kill came after the drain");
    let mut sluice = Sluice::start_with_env(&sb, &["run", "--admin", "off"], &SLOW);
    sluice.expect_within(secs(120), "every order written", || sb.count("out") == N);
    sluice.expect_within(secs(30), "every file in .done/, none in .inflight/", || {
        json_names(&sshd.path("inbox/.done")).len() == N
            && count_files(&sshd.path("inbox/.inflight")) == 0
    });
    assert_eq!(json_names(&sb.path("out")), expected(N));
    assert_eq!(json_names(&sshd.path("inbox/.done")), expected(N));
    assert!(
        sluice.log().contains("lease ran out"),
        "the files the killed process held were taken back\n{}",
        sluice.log_tail(30)
    );
    sluice.assert_running();
}

#[test]
fn sftp_server_restart_mid_drain_loses_nothing() {
    if !sshd_available() {
        return;
    }
    const N: usize = 400;
    let mut sshd = Sshd::start();
    let sb = Sandbox::new();
    sb.write("flows/pull.yaml", slow_flow(&sshd, "out"));
    drop_orders(&sshd, 0..N);
    let mut sluice = Sluice::start_with_env(&sb, &["run", "--admin", "off"], &SLOW);
    sluice.expect_within(secs(60), "some orders written", || sb.count("out") >= 60);
    sshd.kill();
    let mark = sluice.mark();
    sluice.wait_for_line_since(
        mark,
        "the trigger noticing the server is gone",
        secs(60),
        |l| l.contains("sftp trigger:") || l.contains("cannot move the finished file"),
    );
    sshd.restart();
    sluice.expect_within(secs(120), "every order written", || sb.count("out") == N);
    sluice.expect_within(secs(60), "every file in .done/, none in .inflight/", || {
        json_names(&sshd.path("inbox/.done")).len() == N
            && count_files(&sshd.path("inbox/.inflight")) == 0
    });
    assert_eq!(json_names(&sb.path("out")), expected(N));
    sluice.assert_running();
}

#[test]
fn sftp_refuses_a_wrong_or_unknown_host_key() {
    if !sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    for (flow, known) in [
        ("wrong", "wrong_known_hosts"),
        ("unknown", "empty_known_hosts"),
    ] {
        sb.write(
            &format!("flows/{flow}.yaml"),
            format!(
                r#"name: {flow}
trigger:
  sftp: {{ url: "{inbox}", {login}, {QUICK} }}
steps:
  - to: out
sinks:
  out: {{ file: {{ path: out }} }}
"#,
                inbox = sshd.url("inbox"),
                login = sshd.login(known),
            ),
        );
    }
    drop_orders(&sshd, 0..1);
    let mut sluice = Sluice::start(&sb, &["run", "--admin", "off"]);
    let changed = sluice.wait_for_log("does not match the one in", secs(30));
    assert!(
        changed.contains("refusing to connect") && changed.contains("wrong_known_hosts line 1"),
        "{changed}"
    );
    let unknown = sluice.wait_for_log("is not in", secs(30));
    assert!(
        unknown.contains("SHA256:") && unknown.contains("empty_known_hosts"),
        "{unknown}"
    );
    // Nothing was taken.
    assert!(sshd.path("inbox/o-0.json").exists());
    assert!(!sshd.path("inbox/.inflight").exists());
    assert_eq!(sb.count("out"), 0);
    sluice.assert_running();
}

#[test]
fn two_sluice_processes_on_one_sftp_folder_take_each_file_once() {
    if !sshd_available() {
        return;
    }
    const N: usize = 600;
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    sb.write("flows/pull.yaml", slow_flow(&sshd, "out/${env:WORKER}"));
    let mut workers: Vec<Sluice> = ["w1", "w2"]
        .iter()
        .map(|w| Sluice::start_with_env(&sb, &["run", "--admin", "off"], &[("WORKER", w), SLOW[0]]))
        .collect();
    for w in &mut workers {
        w.wait_for_log("flow ready", secs(30));
    }
    drop_orders(&sshd, 0..N);
    workers[0].expect_within(secs(120), "every order written once", || {
        sb.count("out/w1") + sb.count("out/w2") >= N
    });
    workers[0].expect_within(secs(30), "every file in .done/", || {
        json_names(&sshd.path("inbox/.done")).len() == N
    });
    let (a, b) = (
        json_names(&sb.path("out/w1")),
        json_names(&sb.path("out/w2")),
    );
    eprintln!(
        "two processes on one sftp folder: split {} / {}",
        a.len(),
        b.len()
    );
    let both: Vec<&String> = a.intersection(&b).collect();
    assert!(both.is_empty(), "taken by both: {both:?}");
    assert_eq!(&a | &b, expected(N));
    assert!(!a.is_empty() && !b.is_empty(), "both processes took files");
    assert_eq!(json_names(&sshd.path("inbox/.done")).len(), N);
    for w in &mut workers {
        w.assert_running();
    }
}

#[test]
fn a_refused_sftp_password_is_never_logged() {
    if !sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    sb.write(
        "flows/pw.yaml",
        format!(
            r#"name: pw
trigger:
  sftp: {{ url: "{inbox}", password: "${{env:SFTP_PASSWORD}}", known_hosts: "{known}", {QUICK} }}
steps:
  - to: out
sinks:
  out: {{ file: {{ path: out }} }}
"#,
            inbox = sshd.url("inbox"),
            known = sshd.etc("known_hosts"),
        ),
    );
    let secret = "pw-never-in-a-log-7f3a";
    let mut sluice = Sluice::start_with_env(
        &sb,
        &["run", "--admin", "off"],
        &[("SFTP_PASSWORD", secret)],
    );
    // This sshd takes keys only: the password is refused, and the error says so.
    let refused = sluice.wait_for_log("refused the login of", secs(30));
    assert!(refused.contains("tried: password"), "{refused}");
    assert!(!sluice.log().contains(secret), "{}", sluice.log_tail(20));
    sluice.assert_running();
}
