//! Hot reload that can be trusted: a half-written save never runs, status reads never wait
//! for a reload, changes that notifications hide (ConfigMap swaps, symlink targets, a
//! re-created folder) are picked up, moved lines do not restart a trigger, and readiness
//! tells a broken deploy from a broken edit.

use std::io::Write;
use std::os::unix::fs::symlink;
use std::thread;
use std::time::Instant;

use crate::support::*;
use serde_json::Value;

/// A file trigger that takes a file as soon as it is there, so that a half-loaded flow would
/// consume inputs within the time a slow writer pauses.
const EAGER_TRIGGER: &str =
    "min_age: 20ms\n    check_interval: 20ms\n    stable_checks: 1\n    rescan_interval: 100ms";

/// A flow from `inbox/<name>` to `outbox/<name>/<id>.json` that stamps `version`.
fn file_flow(name: &str, version: &str) -> String {
    format!(
        r#"name: {name}
trigger:
  file:
    path: inbox/{name}
    glob: "*.json"
    {EAGER_TRIGGER}
steps:
  - set: {{ version: "'{version}'" }}
  - to: out
sinks:
  out:
    file: {{ path: outbox/{name}, name: "{{{{id}}}}.json" }}
"#
    )
}

fn wait_running(sluice: &mut Sluice) {
    sluice.wait_for_log("sluice running", secs(30));
}

/// Waits for `flow reloaded` (either kind) for `flow` after `mark`; returns the line.
fn wait_reloaded(
    sluice: &mut Sluice,
    mark: u64,
    flow: &str,
    within: std::time::Duration,
) -> String {
    sluice.wait_for_line_since(
        mark,
        &format!("`flow reloaded` for flow={flow}"),
        within,
        |l| l.contains("flow reloaded") && has_flow(l, flow),
    )
}

/// The `version` an input comes out with, once it does.
fn output_version(sluice: &mut Sluice, sb: &Sandbox, flow: &str, id: &str) -> Value {
    sluice.wait_json(sb, &format!("outbox/{flow}/{id}.json"), secs(10))["version"].clone()
}

// ---------------------------------------------------------------------------------------------
// Item 2: a file saved in two writes is loaded only once it is complete
// ---------------------------------------------------------------------------------------------

#[test]
fn a_flow_saved_in_two_writes_never_runs_half_written() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("flows")).unwrap();
    std::fs::create_dir_all(sb.path("inbox/half")).unwrap();
    let mut sluice = Sluice::run(&sb);
    wait_running(&mut sluice);
    const N: usize = 5;
    for i in 0..N {
        sb.drop_json(
            "inbox/half",
            &format!("h-{i}.json"),
            &json!({ "id": format!("h-{i}") }),
        );
    }
    // The first write is a valid flow by itself: a trigger and nothing else, which would
    // complete (and so acknowledge) every input without writing anything.
    let full = file_flow("half", "full");
    let split = full.find("steps:").unwrap();
    let mut file = std::fs::File::create(sb.path("flows/half.yaml")).unwrap();
    file.write_all(&full.as_bytes()[..split]).unwrap();
    file.flush().unwrap();
    // The writer pauses (a slow copy) for five times the old 60 ms debounce, well under the
    // settle time, then writes the rest.
    thread::sleep(millis(300));
    file.write_all(&full.as_bytes()[split..]).unwrap();
    drop(file);

    sluice.wait_ready("half");
    sluice.expect_within(secs(15), &format!("{N} outputs"), || {
        sb.count("outbox/half") == N
    });
    for i in 0..N {
        assert_eq!(
            output_version(&mut sluice, &sb, "half", &format!("h-{i}")),
            "full"
        );
    }
    let log = sluice.log();
    assert_eq!(
        lines_with(&log, "flow ready", "half"),
        1,
        "the flow loaded once, complete:\n{log}"
    );
    assert_eq!(lines_with(&log, "flow reloaded", "half"), 0, "{log}");
}

#[test]
fn a_flow_being_written_when_the_process_starts_loads_only_once_complete() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("inbox/early")).unwrap();
    const N: usize = 5;
    for i in 0..N {
        sb.drop_json(
            "inbox/early",
            &format!("e-{i}.json"),
            &json!({ "id": format!("e-{i}") }),
        );
    }
    // The first write alone is a valid flow that would acknowledge every input unwritten.
    let full = file_flow("early", "full");
    let split = full.find("steps:").unwrap();
    std::fs::create_dir_all(sb.path("flows")).unwrap();
    let mut file = std::fs::File::create(sb.path("flows/early.yaml")).unwrap();
    file.write_all(&full.as_bytes()[..split]).unwrap();
    file.flush().unwrap();
    let mut sluice = Sluice::run(&sb);
    // The copy goes on while the process starts (the pause is the writer's, not a wait for
    // a result).
    thread::sleep(millis(300));
    file.write_all(&full.as_bytes()[split..]).unwrap();
    drop(file);

    sluice.wait_ready("early");
    sluice.expect_within(secs(15), &format!("{N} outputs"), || {
        sb.count("outbox/early") == N
    });
    for i in 0..N {
        assert_eq!(
            output_version(&mut sluice, &sb, "early", &format!("e-{i}")),
            "full"
        );
    }
    let log = sluice.log();
    assert_eq!(
        lines_with(&log, "flow ready", "early"),
        1,
        "the flow loaded once, complete:\n{log}"
    );
    assert_eq!(lines_with(&log, "flow reloaded", "early"), 0, "{log}");
    sluice.expect_within(secs(15), "every input done", || {
        sb.count("inbox/early/.done") == N
    });
}

#[test]
fn a_script_saved_in_two_writes_never_runs_half_written() {
    let sb = Sandbox::new();
    sb.write("scripts/stage.rhai", "payload.stage = \"old\";\n");
    sb.write(
        "flows/scripted.yaml",
        format!(
            r#"trigger:
  file:
    path: inbox/scripted
    {EAGER_TRIGGER}
steps:
  - script: scripts/stage.rhai
  - to: out
sinks:
  out:
    file: {{ path: outbox/scripted, name: "{{{{id}}}}.json" }}
"#
        ),
    );
    std::fs::create_dir_all(sb.path("inbox/scripted")).unwrap();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("scripted");
    let mark = sluice.mark();
    let mut file = std::fs::File::create(sb.path("scripts/stage.rhai")).unwrap();
    file.write_all(b"payload.stage = \"half\";\n").unwrap();
    file.flush().unwrap();
    // While the writer pauses, inputs keep coming; none may see the half-written script.
    let mut dropped = 0;
    let pause = Instant::now();
    while pause.elapsed() < millis(300) {
        let id = format!("s-{dropped}");
        sb.drop_json(
            "inbox/scripted",
            &format!("{id}.json"),
            &json!({ "id": id }),
        );
        dropped += 1;
        thread::sleep(millis(30));
    }
    file.write_all(b"payload.stage = \"full\";\n").unwrap();
    drop(file);
    wait_reloaded(&mut sluice, mark, "scripted", secs(10));
    for _ in 0..2 {
        let id = format!("s-{dropped}");
        sb.drop_json(
            "inbox/scripted",
            &format!("{id}.json"),
            &json!({ "id": id }),
        );
        dropped += 1;
    }
    sluice.expect_within(secs(15), &format!("{dropped} outputs"), || {
        sb.count("outbox/scripted") == dropped
    });
    for i in 0..dropped {
        let out = sb.read_json(&format!("outbox/scripted/s-{i}.json"));
        let stage = out["stage"].as_str().unwrap_or_default().to_owned();
        assert!(
            stage == "old" || stage == "full",
            "s-{i} ran the half-written script: {out}"
        );
        if i >= dropped - 2 {
            assert_eq!(stage, "full", "s-{i} came after the reload: {out}");
        }
    }
    assert_eq!(
        lines_with(&sluice.log_since(mark), "flow reloaded", "scripted"),
        1,
        "one reload, of the complete script:\n{}",
        sluice.log_since(mark)
    );
}

// ---------------------------------------------------------------------------------------------
// Item 15: status reads and other flows never wait for a reload
// ---------------------------------------------------------------------------------------------

/// One admin GET that must answer within a second; returns how long it took.
fn quick_get(ports: Ports, path: &str) -> std::time::Duration {
    let started = Instant::now();
    match try_http_within(ports.admin, "GET", path, &[], None, secs(1)) {
        Ok(r) => assert!(r.status == 200 || r.status == 503, "GET {path}: {r}"),
        Err(e) => panic!("GET {path} did not answer within 1 s while a flow drains: {e}"),
    }
    started.elapsed()
}

#[test]
fn status_and_other_flows_do_not_wait_while_a_removed_flow_drains() {
    let sb = Sandbox::new();
    sb.write("flows/slow.yaml", file_flow("slow", "v1"));
    std::fs::create_dir_all(sb.path("inbox/slow")).unwrap();
    std::fs::create_dir_all(sb.path("inbox/other")).unwrap();
    // Every file-sink write takes 5 s: the removed flow's drain lasts that long.
    let (mut sluice, ports) = Sluice::serve(
        &sb,
        &["--shutdown-grace", "20s"],
        &[("SLUICE_TEST_SINK_DELAY", "5s")],
    );
    sluice.wait_ready("slow");
    sb.drop_json("inbox/slow", "d-1.json", &json!({ "id": "d-1" }));
    sluice.wait_for_log("test sink delay: write started", secs(10));
    let write_started = Instant::now();
    let mark = sluice.mark();
    sb.remove("flows/slow.yaml");
    sb.write("flows/other.yaml", file_flow("other", "v1"));

    let mut slowest = millis(0);
    let mut other_ready = None;
    // Poll until shortly before the slow write can finish (the drain lasts until then).
    while write_started.elapsed() < millis(4200) {
        slowest = slowest.max(quick_get(ports, "/readyz"));
        slowest = slowest.max(quick_get(ports, "/api/flows"));
        if other_ready.is_none() && lines_with(&sluice.log_since(mark), "flow ready", "other") > 0 {
            other_ready = Some(write_started.elapsed());
        }
        thread::sleep(millis(100));
    }
    let log = sluice.log_since(mark);
    assert!(
        other_ready.is_some(),
        "a new flow started while another drains:\n{log}"
    );
    assert_eq!(
        lines_with(&log, "flow stopped (file removed)", "slow"),
        0,
        "the slow flow was still draining during the checks:\n{log}"
    );
    eprintln!(
        "drain: slowest status answer {slowest:?}; new flow ready {:?} after the slow write started",
        other_ready.unwrap()
    );
    // The drained message still completes, then the flow stops.
    sluice.wait_json(&sb, "outbox/slow/d-1.json", secs(15));
    sluice.wait_for_line_since(mark, "`flow stopped` for slow", secs(15), |l| {
        l.contains("flow stopped (file removed)") && has_flow(l, "slow")
    });
}

// ---------------------------------------------------------------------------------------------
// Item 17: changes that notifications hide
// ---------------------------------------------------------------------------------------------

#[test]
fn a_configmap_style_symlink_swap_is_reloaded() {
    let sb = Sandbox::new();
    // The layout Kubernetes mounts: a timestamped folder, `..data` pointing at it, and every
    // visible file a symlink through `..data`.
    sb.write("flows/..2026_12_01_v1/cm.yaml", file_flow("cm", "v1"));
    symlink("..2026_12_01_v1", sb.path("flows/..data")).unwrap();
    symlink("..data/cm.yaml", sb.path("flows/cm.yaml")).unwrap();
    std::fs::create_dir_all(sb.path("inbox/cm")).unwrap();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("cm");
    sb.drop_json("inbox/cm", "c-1.json", &json!({ "id": "c-1" }));
    assert_eq!(output_version(&mut sluice, &sb, "cm", "c-1"), "v1");

    let mark = sluice.mark();
    let changed_at = Instant::now();
    sb.write("flows/..2026_12_01_v2/cm.yaml", file_flow("cm", "v2"));
    symlink("..2026_12_01_v2", sb.path("flows/..data_tmp")).unwrap();
    std::fs::rename(sb.path("flows/..data_tmp"), sb.path("flows/..data")).unwrap();
    std::fs::remove_dir_all(sb.path("flows/..2026_12_01_v1")).unwrap();
    wait_reloaded(&mut sluice, mark, "cm", secs(5));
    eprintln!("configmap swap reloaded after {:?}", changed_at.elapsed());
    sb.drop_json("inbox/cm", "c-2.json", &json!({ "id": "c-2" }));
    assert_eq!(output_version(&mut sluice, &sb, "cm", "c-2"), "v2");
}

#[test]
fn a_flows_folder_deleted_and_created_again_is_watched_again() {
    let sb = Sandbox::new();
    sb.write("flows/first.yaml", file_flow("first", "v1"));
    std::fs::create_dir_all(sb.path("inbox/second")).unwrap();
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("first");
    sluice.expect_within(secs(10), "/readyz is 200", || {
        admin_get(ports, "/readyz", None).status == 200
    });
    let mark = sluice.mark();
    std::fs::remove_dir_all(sb.path("flows")).unwrap();
    sluice.wait_for_line_since(mark, "`flow stopped` for first", secs(5), |l| {
        l.contains("flow stopped (file removed)") && has_flow(l, "first")
    });
    sluice.expect_within(secs(5), "/readyz is 503 while flows/ is gone", || {
        let r = admin_get(ports, "/readyz", None);
        r.status == 503 && r.text().contains("flows")
    });

    let created_at = Instant::now();
    sb.write("flows/second.yaml", file_flow("second", "v1"));
    sluice.wait_for_line_since(mark, "`flow ready` for second", secs(5), |l| {
        l.contains("flow ready") && has_flow(l, "second")
    });
    eprintln!(
        "re-created folder: new flow ready after {:?}",
        created_at.elapsed()
    );
    sluice.wait_for_line_since(mark, "the watch is re-established", secs(5), |l| {
        l.contains("watching folder again")
    });
    sluice.expect_within(secs(5), "/readyz is 200 again", || {
        admin_get(ports, "/readyz", None).status == 200
    });
    // And the new folder's changes keep coming.
    let edit = sluice.mark();
    sb.write("flows/second.yaml", file_flow("second", "v2"));
    wait_reloaded(&mut sluice, edit, "second", secs(5));
    sb.drop_json("inbox/second", "r-1.json", &json!({ "id": "r-1" }));
    assert_eq!(output_version(&mut sluice, &sb, "second", "r-1"), "v2");
}

#[test]
fn an_edit_of_a_symlinked_flow_files_target_is_reloaded() {
    let sb = Sandbox::new();
    sb.write("elsewhere/linked.yaml", file_flow("linked", "v1"));
    std::fs::create_dir_all(sb.path("flows")).unwrap();
    symlink("../elsewhere/linked.yaml", sb.path("flows/linked.yaml")).unwrap();
    std::fs::create_dir_all(sb.path("inbox/linked")).unwrap();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("linked");
    let mark = sluice.mark();
    let edited_at = Instant::now();
    sb.write("elsewhere/linked.yaml", file_flow("linked", "v2"));
    wait_reloaded(&mut sluice, mark, "linked", secs(5));
    eprintln!(
        "symlink target edit reloaded after {:?}",
        edited_at.elapsed()
    );
    sb.drop_json("inbox/linked", "l-1.json", &json!({ "id": "l-1" }));
    assert_eq!(output_version(&mut sluice, &sb, "linked", "l-1"), "v2");
}

// ---------------------------------------------------------------------------------------------
// Item 18: lines that moved do not restart a trigger
// ---------------------------------------------------------------------------------------------

const CHANNEL_FEED: &str = r#"name: feed
trigger:
  file: { path: inbox/feed, min_age: 20ms, check_interval: 20ms, stable_checks: 1 }
steps:
  - to: next
sinks:
  next:
    channel: { name: reload-trust }
"#;

fn channel_consumer(description: &str) -> String {
    format!(
        r#"name: consumer
{description}trigger:
  channel: {{ name: reload-trust }}
steps:
  - to: out
sinks:
  out:
    file: {{ path: outbox/consumer, name: "{{{{id}}}}.json" }}
"#
    )
}

#[test]
fn a_description_edit_does_not_restart_a_channel_trigger() {
    let sb = Sandbox::new();
    sb.write("flows/feed.yaml", CHANNEL_FEED);
    sb.write("flows/consumer.yaml", channel_consumer(""));
    std::fs::create_dir_all(sb.path("inbox/feed")).unwrap();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("feed");
    sluice.wait_ready("consumer");
    sb.drop_json("inbox/feed", "m-1.json", &json!({ "id": "m-1" }));
    sluice.wait_json(&sb, "outbox/consumer/m-1.json", secs(10));

    let mark = sluice.mark();
    sb.write(
        "flows/consumer.yaml",
        channel_consumer("description: |\n  Takes what the feed sends.\n  Two lines more.\n"),
    );
    let line = wait_reloaded(&mut sluice, mark, "consumer", secs(10));
    assert!(
        !line.contains("trigger restarted"),
        "only `description:` changed, yet the trigger restarted: {line}"
    );
    sb.drop_json("inbox/feed", "m-2.json", &json!({ "id": "m-2" }));
    sluice.wait_json(&sb, "outbox/consumer/m-2.json", secs(10));
}

#[test]
fn a_description_edit_does_not_restart_a_nats_trigger() {
    if !service_available("NATS JetStream", 4222) {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = unique_name("RELOADTRUST");
    let subject = unique_name("reloadtrust");
    let js = rt.block_on(async {
        let client = async_nats::connect("nats://127.0.0.1:4222")
            .await
            .expect("connect to NATS");
        let js = async_nats::jetstream::new(client);
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subject}.in")],
            ..Default::default()
        })
        .await
        .expect("create stream");
        js
    });
    let publish = |from: usize, to: usize| {
        rt.block_on(async {
            for i in from..to {
                let body = serde_json::to_vec(&json!({ "id": format!("n-{i}") })).unwrap();
                js.publish(format!("{subject}.in"), body.into())
                    .await
                    .expect("publish")
                    .await
                    .expect("JetStream ack");
            }
        })
    };
    let flow = |description: &str| {
        format!(
            r#"name: natsflow
{description}trigger:
  nats: {{ url: "nats://127.0.0.1:4222", stream: {stream}, subject: "{subject}.in", durable: natsflow }}
steps:
  - set: {{ delivered: "meta('nats.delivered')" }}
  - to: out
sinks:
  out:
    file: {{ path: outbox/nats, name: "{{{{id}}}}.json" }}
"#
        )
    };
    let sb = Sandbox::new();
    sb.write("flows/natsflow.yaml", flow(""));
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("natsflow");
    publish(0, 10);
    sluice.expect_within(secs(30), "10 outputs", || sb.count("outbox/nats") == 10);
    let mark = sluice.mark();
    sb.write(
        "flows/natsflow.yaml",
        flow("description: |\n  Reads the stream.\n  And writes files.\n"),
    );
    let line = wait_reloaded(&mut sluice, mark, "natsflow", secs(10));
    assert!(
        !line.contains("trigger restarted"),
        "only `description:` changed, yet the trigger restarted: {line}"
    );
    publish(10, 20);
    sluice.expect_within(secs(30), "20 outputs", || sb.count("outbox/nats") == 20);
    for i in 0..20 {
        let out = sb.read_json(&format!("outbox/nats/n-{i}.json"));
        assert_eq!(out["delivered"], "1", "n-{i} was delivered again: {out}");
    }
    drop(sluice);
    rt.block_on(async {
        let _ = js.delete_stream(&stream).await;
    });
}

// ---------------------------------------------------------------------------------------------
// Item 21: readiness tells a broken deploy from a broken edit; states
// ---------------------------------------------------------------------------------------------

const BROKEN: &str = "trigger:\n  file: { path: inbox/x }\nsteps:\n  - transform: \"[[\"\n";

#[test]
fn a_flow_file_that_does_not_load_at_start_up_keeps_readyz_at_503() {
    let sb = Sandbox::new();
    sb.write("flows/good.yaml", file_flow("good", "v1"));
    sb.write("flows/broken.yaml", BROKEN);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("good");
    wait_running(&mut sluice);
    let r = admin_get(ports, "/readyz", None);
    assert_eq!(r.status, 503, "a broken deploy is not ready: {r}");
    let body = r.json();
    let unready = body["unready"].as_array().expect("an `unready` list");
    assert!(
        unready.iter().any(|u| u["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("broken.yaml"))),
        "/readyz names the file: {body}"
    );
    let flows = admin_get(ports, "/api/flows", None).json();
    let broken = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "broken")
        .unwrap_or_else(|| panic!("broken in /api/flows: {flows}"));
    assert_eq!(broken["state"], "invalid", "{broken}");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("broken.yaml")
    );

    // Fixed, it loads and the runtime is ready.
    sb.write("flows/broken.yaml", file_flow("broken", "v1"));
    sluice.wait_ready("broken");
    sluice.expect_within(secs(5), "/readyz is 200 once it loads", || {
        admin_get(ports, "/readyz", None).status == 200
    });
}

#[test]
fn a_broken_edit_of_a_running_flow_keeps_it_ready_and_shows_the_error() {
    let sb = Sandbox::new();
    sb.write("flows/edited.yaml", file_flow("edited", "v1"));
    std::fs::create_dir_all(sb.path("inbox/edited")).unwrap();
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("edited");
    sluice.expect_within(secs(10), "/readyz is 200", || {
        admin_get(ports, "/readyz", None).status == 200
    });
    let mark = sluice.mark();
    sb.write("flows/edited.yaml", BROKEN);
    sluice.wait_for_line_since(mark, "`reload failed` for edited", secs(10), |l| {
        l.contains("reload failed") && has_flow(l, "edited")
    });
    let r = admin_get(ports, "/readyz", None);
    assert_eq!(r.status, 200, "the last good version keeps running: {r}");
    let errors = r.json()["errors"].clone();
    assert!(
        errors.as_array().is_some_and(|e| {
            e.iter().any(|e| {
                e["flow"] == "edited" && e["error"].as_str().unwrap().contains("edited.yaml")
            })
        }),
        "/readyz shows the error: {r}"
    );
    let flow = admin_flow(ports, "edited");
    assert_eq!(flow["state"], "running", "{flow}");
    assert!(flow["last_error"].as_str().is_some(), "{flow}");
    sb.drop_json("inbox/edited", "e-1.json", &json!({ "id": "e-1" }));
    assert_eq!(output_version(&mut sluice, &sb, "edited", "e-1"), "v1");
}

#[test]
fn an_unreachable_broker_shows_connecting_without_credentials() {
    let sb = Sandbox::new();
    let port = free_port();
    sb.write(
        "flows/faraway.yaml",
        format!(
            r#"trigger:
  nats: {{ url: "nats://reader:s3cret-pw@127.0.0.1:{port}", subject: faraway.in }}
sinks:
  out:
    stdout: {{}}
"#
        ),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("faraway");
    let flow = admin_flow(ports, "faraway");
    assert_eq!(flow["state"], "connecting", "{flow}");
    assert_eq!(flow["url"], format!("nats://127.0.0.1:{port}"), "{flow}");
    let r = admin_get(ports, "/readyz", None);
    assert_eq!(r.status, 503, "{r}");
    for text in [
        admin_get(ports, "/api/flows", None).text(),
        r.text(),
        admin_get(ports, "/", None).text(),
    ] {
        assert!(!text.contains("s3cret-pw"), "a credential shows: {text}");
    }
    // Still connecting after the first failed attempts.
    sluice.wait_for_log("reconnecting", secs(10));
    assert_eq!(admin_flow(ports, "faraway")["state"], "connecting");
}
