//! The metrics operators asked for: sink write latency, trigger connected, the flow version
//! as an info metric (and dead-letter depth, in operate_dlq.rs).

use crate::support::*;
use serde_json::json;

const PASS_FLOW: &str = r#"name: pass
description: "@V@"
trigger:
  file:
    path: inbox/pass
    glob: "*.json"
    @FAST@
steps:
  - to: out
sinks:
  out:
    file: { path: outbox/pass, name: "{{id}}.json" }
"#;

#[test]
fn sink_latency_trigger_connected_and_flow_version_are_metrics() {
    let sb = Sandbox::new();
    let port = free_port();
    sb.write(
        "flows/pass.yaml",
        PASS_FLOW
            .replace("@FAST@", FAST_TRIGGER)
            .replace("@V@", "v1"),
    );
    sb.write(
        "flows/faraway.yaml",
        format!(
            "trigger:\n  nats: {{ url: \"nats://127.0.0.1:{port}\", subject: faraway.in }}\nsinks:\n  out:\n    stdout: {{}}\n"
        ),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("pass");
    sb.drop_json("inbox/pass", "p-1.json", &json!({"id": "p-1"}));
    sluice.wait_json(&sb, "outbox/pass/p-1.json", secs(20));

    let m = scrape(ports);
    let write = &[("flow", "pass"), ("sink", "out")];
    sluice.expect_within(secs(5), "a sink write in the histogram", || {
        scrape(ports).count("sluice_sink_write_duration_seconds_count", write) >= 1.0
    });
    assert_eq!(
        m.types
            .get("sluice_sink_write_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert_eq!(
        m.value("sluice_trigger_connected", &[("flow", "pass")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("sluice_trigger_connected", &[("flow", "faraway")]),
        Some(0.0),
        "an unreachable broker is not connected"
    );
    assert_eq!(
        m.value("sluice_ready", &[]),
        Some(0.0),
        "faraway is not ready"
    );
    let v1 = admin_flow(ports, "pass")["version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        m.value("sluice_flow_info", &[("flow", "pass"), ("version", &v1)]),
        Some(1.0)
    );

    // A reload: the new version is 1, the replaced one 0.
    sb.write_atomic(
        "flows/pass.yaml",
        PASS_FLOW
            .replace("@FAST@", FAST_TRIGGER)
            .replace("@V@", "v2"),
    );
    sluice.expect_within(secs(30), "version 2 running", || {
        admin_flow(ports, "pass")["version"] != v1.as_str()
    });
    let v2 = admin_flow(ports, "pass")["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let m = scrape(ports);
    assert_eq!(
        m.value("sluice_flow_info", &[("flow", "pass"), ("version", &v2)]),
        Some(1.0)
    );
    assert_eq!(
        m.value("sluice_flow_info", &[("flow", "pass"), ("version", &v1)]),
        Some(0.0)
    );
    sluice.assert_running();
}
