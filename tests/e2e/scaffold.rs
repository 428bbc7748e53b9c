//! `sluice new flow NAME --trigger KIND`: for every trigger kind of the flow format, a flow
//! with a contract stub and tests that `sluice check` finds clean and `sluice test` passes;
//! the `http` one also serves a real request.

use crate::support::*;

/// Every trigger key of the flow format, read from the schema `sluice schema` prints, so a
/// new trigger without a scaffold fails here.
fn trigger_keys(sb: &Sandbox) -> Vec<String> {
    let schema = sb.cli(&["schema"], None).stdout_json();
    schema["$defs"]["TriggerConfig"]["oneOf"]
        .as_array()
        .expect("TriggerConfig is a oneOf")
        .iter()
        .map(|arm| {
            arm["required"][0]
                .as_str()
                .expect("each arm requires its key")
                .to_owned()
        })
        .collect()
}

#[test]
fn every_trigger_gets_a_flow_that_checks_and_passes_its_tests() {
    let sb = Sandbox::new();
    let keys = trigger_keys(&sb);
    assert!(keys.len() >= 9, "{keys:?}");
    for key in &keys {
        let name = format!("demo-{key}");
        let out = sb.cli(&["new", "flow", &name, "--trigger", key], None);
        assert_eq!(
            out.code,
            Some(0),
            "sluice new … --trigger {key}: {}",
            out.all()
        );
        assert!(sb.exists(&format!("flows/{name}.yaml")), "{}", out.all());
        let contract = sb.read_json(&format!("schemas/{name}.v1.json"));
        assert_eq!(contract["required"], json!(["id"]), "{contract}");
        let flow = std::fs::read_to_string(sb.path(&format!("flows/{name}.yaml"))).unwrap();
        assert!(flow.contains(&format!("trigger:\n  {key}:")), "{flow}");
        assert!(flow.contains(&format!("input: {name}.v1")), "{flow}");

        let check = sb.cli(&["check", &format!("flows/{name}.yaml")], None);
        assert_eq!(check.code, Some(0), "check {key}: {}", check.all());
        assert!(
            !check.all().contains("warning"),
            "check is clean: {}",
            check.all()
        );
        let test = sb.cli(&["test", &format!("flows/{name}.yaml")], None);
        assert_eq!(test.code, Some(0), "test {key}: {}", test.all());
        assert!(
            test.stdout.contains("test result: 2 passed, 0 failed"),
            "{key}: {}",
            test.all()
        );
    }
    // All of them together too: names, paths and channels do not collide.
    let all = sb.cli(&["check"], None);
    assert_eq!(all.code, Some(0), "{}", all.all());
}

#[test]
fn the_http_flow_serves_a_request_and_new_refuses_to_overwrite() {
    let sb = Sandbox::new();
    let out = sb.cli(&["new", "flow", "quotes", "--trigger", "http"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("quotes");
    sluice.wait_listener(ports);
    let r = post_json(ports.listen, "/quotes", &[], &json!({ "id": "q-1" }));
    assert_eq!(r.status, 200, "{r}\n{}", sluice.log_tail(20));
    assert_eq!(r.json()["id"], "q-1", "{r}");
    let written = sluice.wait_json(&sb, "outbox/quotes/q-1.json", secs(10));
    assert_eq!(written["id"], "q-1", "{written}");
    let r = post_json(ports.listen, "/quotes", &[], &json!({ "note": "no id" }));
    assert_eq!(r.status, 422, "the contract stub is in force: {r}");
    drop(sluice);

    let before = std::fs::read_to_string(sb.path("flows/quotes.yaml")).unwrap();
    let again = sb.cli(&["new", "flow", "quotes", "--trigger", "file"], None);
    assert_eq!(again.code, Some(1), "{}", again.all());
    assert!(
        again.all().contains("flows/quotes.yaml exists already"),
        "{}",
        again.all()
    );
    assert_eq!(
        std::fs::read_to_string(sb.path("flows/quotes.yaml")).unwrap(),
        before,
        "nothing was overwritten"
    );

    let bad = sb.cli(&["new", "flow", "../evil", "--trigger", "http"], None);
    assert_eq!(bad.code, Some(1), "{}", bad.all());
    assert!(
        bad.all().contains("is not a usable flow name"),
        "{}",
        bad.all()
    );
    let unknown = sb.cli(&["new", "flow", "x", "--trigger", "ftp"], None);
    assert_ne!(unknown.code, Some(0), "{}", unknown.all());
    assert!(
        unknown.all().contains("http"),
        "lists the triggers: {}",
        unknown.all()
    );
}
