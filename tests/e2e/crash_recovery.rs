//! SIGKILL in the middle of a run loses nothing: what was claimed but not acknowledged is
//! processed again on the next start.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::support::*;

const CRASH_FLOW: &str = r#"name: crash
concurrency: 4
trigger:
  file:
    path: inbox/crash
    glob: "*.json"
    @FAST@
steps:
  - transform: "{id: id, n: n, twice: n}"
  - to: out
sinks:
  out:
    file: { path: outbox/crash, name: "{{id}}.json", on_conflict: suffix }
"#;

#[test]
fn sigkill_mid_run_then_restart_delivers_every_file_once() {
    const N: usize = 5_000;
    let sb = Sandbox::new();
    sb.write(
        "flows/crash.yaml",
        CRASH_FLOW.replace("@FAST@", FAST_TRIGGER),
    );

    // The inputs are all there before the first start.
    let mut expected = BTreeSet::new();
    for i in 0..N {
        let id = format!("c-{i:04}");
        sb.drop_json(
            "inbox/crash",
            &format!("{id}.json"),
            &json!({ "id": id, "n": i }),
        );
        expected.insert(format!("{id}.json"));
    }

    let outbox = sb.path("outbox/crash");
    let done = sb.path("inbox/crash/.done");
    let inflight = sb.path("inbox/crash/.inflight");

    let mut first = Sluice::run(&sb);
    let started = Instant::now();
    // Kill as soon as a first batch is out, long before everything is.
    first.expect_within(secs(60), "the first outputs appear", || {
        count_files(&outbox) >= 50
    });
    first.kill();
    let (outputs_at_kill, done_at_kill, inflight_at_kill) = (
        count_files(&outbox),
        count_files(&done),
        count_files(&inflight),
    );
    eprintln!(
        "killed after {:?}: {outputs_at_kill} outputs, {done_at_kill} done, {inflight_at_kill} in flight",
        started.elapsed()
    );
    assert!(
        done_at_kill < N,
        "every file was already done when the process was killed; the crash did not happen mid-run"
    );

    let mut second = Sluice::run(&sb);
    second.expect_within(
        secs(120),
        &format!("{N} files in .done/ and {N} outputs"),
        || count_files(&done) >= N && count_files(&outbox) >= N,
    );
    // Give a duplicate (a late `-1` copy) the chance to show up before comparing.
    std::thread::sleep(millis(1500));

    let outputs = sb.names("outbox/crash");
    let missing: Vec<_> = expected.difference(&outputs).take(10).collect();
    let extra: Vec<_> = outputs.difference(&expected).take(10).collect();
    assert!(
        missing.is_empty(),
        "inputs without an output (first 10): {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "duplicate or unexpected outputs (first 10): {extra:?}"
    );
    assert_eq!(outputs.len(), N);

    for i in 0..N {
        let id = format!("c-{i:04}");
        let out = read_json(&outbox.join(format!("{id}.json")));
        assert_eq!(
            out,
            json!({ "id": id, "n": i, "twice": i }),
            "content of output {id}"
        );
    }

    assert_eq!(
        sb.names("inbox/crash/.done"),
        expected,
        ".done/ holds every input exactly once"
    );
    assert_eq!(count_files(&inflight), 0, ".inflight/ is empty at the end");
    assert_eq!(sb.count("inbox/crash"), 0, "nothing left in the inbox");
    assert_eq!(
        sb.count("inbox/crash/.error"),
        0,
        "nothing in .error/:\n{}",
        second.log_tail(40)
    );
    assert_eq!(
        sb.count("inbox/crash/.rejected"),
        0,
        "nothing in .rejected/"
    );
    second.assert_running();
}
