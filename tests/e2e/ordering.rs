//! `order_by`: messages with the same key run one at a time, in arrival order, while the
//! flow's `concurrency` runs different keys in parallel (issue 12, item 8).

use crate::support::mqtt::{MQTT_PORT, Mqtt, TestNames, wait_session};
use crate::support::*;
use serde_json::Value;

/// Readings of three sensors, interleaved; every fifth reading of a sensor takes a while in
/// the script, so that without per-key order the later ones would overtake it and the
/// aggregate's windows would not be consecutive.
const WINDOWS_FLOW: &str = r#"name: windows
concurrency: 4
order_by: sensor
trigger:
  file:
    path: inbox/readings
    glob: "*.ndjson"
    format: ndjson
    @FAST@
script_limits: { deadline: 10s, max_operations: 100000000 }
steps:
  - script: |
      let n = 0;
      while n < payload.work { n += 1; }
  - aggregate:
      key: sensor
      size: 5
      timeout: 60s
      output: "{sensor: [0].sensor, first: [0].seq, seqs: [].seq}"
  - to: out
sinks:
  out:
    file: { path: outbox/windows, name: "{{sensor}}-{{first}}.json" }
"#;

#[test]
fn windows_of_each_key_hold_consecutive_readings_in_arrival_order() {
    let sb = Sandbox::new();
    sb.write(
        "flows/windows.yaml",
        WINDOWS_FLOW.replace("@FAST@", FAST_TRIGGER),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("windows");
    let mut lines = String::new();
    for seq in 0..10 {
        for sensor in ["a", "b", "c"] {
            let work = if seq % 5 == 0 { 30_000 } else { 0 };
            lines.push_str(&format!(
                "{}\n",
                json!({ "sensor": sensor, "seq": seq, "work": work })
            ));
        }
    }
    sb.write_atomic("inbox/readings/r.ndjson", lines);
    sluice.expect_within(secs(60), "six windows and the file done", || {
        sb.count("outbox/windows") == 6 && sb.count("inbox/readings/.done") == 1
    });
    for sensor in ["a", "b", "c"] {
        for first in [0, 5] {
            let window: Value = sb.read_json(&format!("outbox/windows/{sensor}-{first}.json"));
            let expected: Vec<i64> = (first..first + 5).collect();
            assert_eq!(
                window["seqs"],
                json!(expected),
                "the window of {sensor} starting at {first}: {window}"
            );
        }
    }
    sluice.assert_running();
}

#[test]
fn an_order_by_that_is_not_jmespath_is_refused_at_its_position() {
    let sb = Sandbox::new();
    let text = "name: bad\norder_by: \"sensor[\"\ntrigger:\n  file: { path: inbox/bad }\nsteps:\n  - to: out\nsinks:\n  out: { stdout: {} }\n";
    sb.write("flows/bad.yaml", text);
    let out = sb.cli(&["check", "flows/bad.yaml"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.all().contains("flows/bad.yaml:2:"),
        "the error names the order_by line: {}",
        out.all()
    );
}

/// The example `examples/sensor-windows` against the real Mosquitto and JetStream: 20
/// interleaved readings each of two sensors, published at QoS 1, come out as four windows of
/// ten consecutive readings. Its names are made unique for the run (topic, client id,
/// subjects, stream), so that other runs' sessions and streams cannot interfere.
#[test]
fn the_sensor_windows_example_publishes_windows_of_consecutive_readings() {
    if !service_available("Mosquitto", MQTT_PORT) || !service_available("NATS JetStream", 4222) {
        return;
    }
    // The guard ends sluice's persistent session on the broker (declared first: dropped last).
    let TestNames {
        prefix: run,
        client_id,
        session: _session,
    } = TestNames::new(MQTT_PORT, "sw");
    let sb = Sandbox::new();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sensor-windows");
    copy_dir(&example, sb.root());
    let stream = unique_name("SW");
    let flow = std::fs::read_to_string(example.join("flows/sensor-windows.yaml"))
        .expect("the example flow")
        .replace(
            "sensors/+/temperature",
            &format!("{run}/sensors/+/temperature"),
        )
        .replace(
            "client_id: sluice-sensor-windows",
            &format!("client_id: {client_id}"),
        )
        .replace("windows.", &format!("{stream}.windows."))
        .replace("SENSOR_WINDOWS", &stream);
    sb.write("flows/sensor-windows.yaml", &flow);
    let js = crate::brokers_nats::Js::connect(4222);
    let mut sluice = Sluice::run(&sb);
    wait_session(&mut sluice, "sensor-windows");
    let mut mqtt = Mqtt::connect(MQTT_PORT);
    let readings = std::fs::read_to_string(example.join("inputs/readings.ndjson")).unwrap();
    for line in readings.lines() {
        let reading: Value = serde_json::from_str(line).unwrap();
        let sensor = reading["sensor"].as_str().unwrap().to_owned();
        mqtt.publish_json(&format!("{run}/sensors/{sensor}/temperature"), &reading);
    }
    mqtt.flush();
    sluice.expect_within(secs(30), "four windows in the stream", || {
        js.count(&stream) == 4
    });
    let mut windows: Vec<(String, i64, i64, i64)> = js
        .read_all(&stream)
        .into_iter()
        .map(|(_, w)| {
            let n = |k: &str| w[k].as_i64().unwrap_or(-1);
            (
                w["sensor"].as_str().unwrap_or("").to_owned(),
                n("from"),
                n("to"),
                n("readings"),
            )
        })
        .collect();
    windows.sort();
    assert_eq!(
        windows,
        vec![
            ("s-1".to_owned(), 1, 10, 10),
            ("s-1".to_owned(), 11, 20, 10),
            ("s-2".to_owned(), 1, 10, 10),
            ("s-2".to_owned(), 11, 20, 10),
        ],
        "every window holds ten consecutive readings of one sensor"
    );
    js.delete_stream(&stream);
    sluice.assert_running();
}
