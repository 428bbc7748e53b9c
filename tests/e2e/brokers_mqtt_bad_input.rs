//! MQTT bad input end to end, against the Mosquitto broker on 127.0.0.1:1883: a body that is
//! not JSON is acknowledged (and, with a dead letter, kept there with its raw text), the next
//! message still flows, and broken topic filters, QoS and sink topics are load errors with
//! file:line:col.

use crate::support::mqtt::*;
use crate::support::*;
use std::collections::BTreeSet;
#[test]
fn mqtt_bad_message_and_config_errors() {
    if !service_available("Mosquitto", MQTT_PORT) {
        return;
    }
    let TestNames {
        prefix,
        client_id,
        session: _session,
    } = TestNames::new(MQTT_PORT, "mqx");
    let sb = Sandbox::new();
    sb.write(
        "flows/fwd.yaml",
        file_forward_flow(MQTT_PORT, &prefix, &client_id, ""),
    );
    let mut sluice = Sluice::run(&sb);
    wait_session(&mut sluice, "fwd");
    let mut publisher = Mqtt::connect(MQTT_PORT);
    publisher.publish(&format!("{prefix}/in"), b"this is {not json".to_vec());
    publisher.publish_json(&format!("{prefix}/in"), &json!({ "id": "m-1", "n": 1 }));
    publisher.flush();
    let line = sluice.wait_for_line("`not JSON` for flow=fwd", secs(30), |l| {
        l.contains("not JSON") && has_flow(l, "fwd")
    });
    println!("mqtt bad body: {line}");
    let good = sluice.wait_json(&sb, "outbox/m-1.json", secs(30));
    assert_eq!(
        good,
        json!({ "id": "m-1", "n": 1, "topic": format!("{prefix}/in") })
    );
    // Both were acknowledged: the same session gets neither again.
    let status = sluice.terminate(secs(30));
    assert!(status.success(), "graceful stop: {status:?}");
    let mut again = Sluice::run(&sb);
    wait_session(&mut again, "fwd");
    std::thread::sleep(millis(1500));
    again.assert_running();
    assert!(
        !again.log().contains("not JSON"),
        "the bad body was not redelivered:\n{}",
        again.log_tail(30)
    );
    assert_eq!(sb.names("outbox"), file_names_for(1..2));
    drop(again);
    publisher.disconnect();

    // Load errors, with `sluice check`. The valid flow passes; each edit fails at its line.
    let base = r#"trigger:
  mqtt:
    url: "mqtt://127.0.0.1:1883"
    topics:
      - "sluice-test/check/in/+"
      - "sluice-test/check/alerts/#"
    qos: 1
steps:
  - to: out
sinks:
  out:
    mqtt:
      topic: "sluice-test/check/out/{{ region }}"
"#;
    sb.write("flows/base.yaml", base);
    let out = sb.cli(&["check", "flows/base.yaml"], None);
    assert_eq!(
        out.code,
        Some(0),
        "the valid mqtt flow passes\n{}",
        out.all()
    );
    let cases: [(&str, &str, &str, &[&str]); 3] = [
        (
            "filter",
            "\"sluice-test/check/alerts/#\"",
            "\"a/#/b\"",
            &["#", "filter", "wildcard", "topic"],
        ),
        ("qos", "qos: 1", "qos: 2", &["qos"]),
        (
            "sinktopic",
            "\"sluice-test/check/out/{{ region }}\"",
            "\"sluice-test/check/+/{{ region }}\"",
            &["+", "wildcard", "topic"],
        ),
    ];
    for (name, from, to, words) in cases {
        let text = base.replace(from, to);
        assert_ne!(text, base, "{name}: the edit applies");
        let rel = format!("flows/{name}.yaml");
        sb.write(&rel, &text);
        let out = sb.cli(&["check", &rel], None);
        assert_eq!(
            out.code,
            Some(1),
            "`sluice check {rel}` exits 1\n{}",
            out.all()
        );
        let line = line_of(&text, to);
        let src = text.lines().nth(line as usize - 1).unwrap();
        let first_col = (src.len() - src.trim_start().len()) as u32 + 1;
        let last_col = src.len() as u32;
        let found = positions(&out.stderr, &rel);
        assert!(
            found
                .iter()
                .any(|&(l, c)| l == line && (first_col..=last_col).contains(&c)),
            "`sluice check {rel}` names {rel}:{line}:<col on `{}`> (found {found:?})\n{}",
            src.trim(),
            out.all()
        );
        let head = headline(&out.stderr).to_lowercase();
        assert!(
            words.iter().any(|w| head.contains(w)),
            "{rel}: the headline says what is wrong (one of {words:?}): {head}\n{}",
            out.all()
        );
    }
}

/// The first `error…` headline of a diagnostic output.
fn headline(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.trim_start().starts_with("error"))
        .unwrap_or_else(|| panic!("no `error` line in:\n{stderr}"))
        .to_owned()
}

#[test]
fn mqtt_undecodable_body_goes_to_the_dead_letter() {
    if !service_available("Mosquitto", MQTT_PORT) {
        return;
    }
    let TestNames {
        prefix,
        client_id,
        session: _session,
    } = TestNames::new(MQTT_PORT, "mqu");
    let sb = Sandbox::new();
    sb.write(
        "flows/mqu.yaml",
        format!(
            r#"name: mqu
trigger:
  mqtt:
    url: "{url}"
    topics: ["{prefix}/in"]
    client_id: "{client_id}"
    redeliver_delay: 200ms
steps:
  - set: {{ topic: "meta('mqtt.topic')" }}
  - to: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{id}}}}.json" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#,
            url = url(MQTT_PORT)
        ),
    );
    let mut sluice = Sluice::run(&sb);
    wait_session(&mut sluice, "mqu");
    let mut publisher = Mqtt::connect(MQTT_PORT);
    publisher.publish(&format!("{prefix}/in"), b"not json {".to_vec());
    publisher.publish_json(&format!("{prefix}/in"), &json!({ "id": "good-1", "n": 1 }));
    publisher.flush();
    let good = sluice.wait_json(&sb, "outbox/good-1.json", secs(30));
    assert_eq!(
        good,
        json!({ "id": "good-1", "n": 1, "topic": format!("{prefix}/in") })
    );
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    let log = sluice.log();
    assert_logged_once(
        &log,
        "message failed: trigger error: the body is not JSON",
        "mqu",
    );
    let dead = undecodable_dead_letter(&sb, "not json {", "not JSON");
    assert_eq!(
        dead["meta"]["mqtt.topic"],
        format!("{prefix}/in").as_str(),
        "{dead:#}"
    );

    // Stop, start again with the same session: anything not acknowledged would come back.
    let status = sluice.terminate(secs(30));
    assert!(status.success(), "graceful stop: {status:?}");
    let mut again = Sluice::run(&sb);
    let ready = wait_session(&mut again, "mqu");
    assert!(
        has_field(&ready, "session_present", "true"),
        "the broker kept the session: {ready}"
    );
    std::thread::sleep(secs(2));
    again.assert_running();
    assert_eq!(
        sb.count("dead-letter"),
        1,
        "the unreadable message was acknowledged, not delivered again"
    );
    assert_eq!(
        sb.names("outbox"),
        ["good-1.json".to_owned()]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        lines_with(&again.log(), "message failed", "mqu"),
        0,
        "no failure after the restart:\n{}",
        again.log_tail(30)
    );
    drop(again);
    publisher.disconnect();
}
