//! Contracts check the JSON Schema `format` keyword by default (`email`, `date-time`, `date`,
//! `uri`, `uuid`, `ipv4`, …), whichever draft `$schema` selects, and a contract can turn it off.

use crate::support::*;

const SIGNUP_FLOW: &str = r#"name: signup
trigger:
  http: { path: /signup, method: POST }
contract:
  input: signup.v1
"#;

const LOOSE_FLOW: &str = r#"name: loose
trigger:
  http: { path: /loose, method: POST }
contract:
  input: loose.v1
"#;

fn schema(draft: &str, extra: &str) -> String {
    format!(
        r#"{{"$schema": "{draft}",{extra}
  "type": "object",
  "properties": {{
    "email": {{"type": "string", "format": "email"}},
    "at": {{"type": "string", "format": "date-time"}},
    "born": {{"type": "string", "format": "date"}},
    "site": {{"type": "string", "format": "uri"}},
    "id": {{"type": "string", "format": "uuid"}},
    "ip": {{"type": "string", "format": "ipv4"}}
  }}
}}"#
    )
}

fn good() -> serde_json::Value {
    json!({
        "email": "ada@example.com",
        "at": "2026-12-01T18:00:00Z",
        "born": "1815-12-10",
        "site": "https://example.com/ada",
        "id": "0b7e4a52-6a4e-4a8f-9a0c-3d2e1f0a9b8c",
        "ip": "192.0.2.7"
    })
}

fn bad() -> serde_json::Value {
    json!({
        "email": "not-an-email",
        "at": "yesterday",
        "born": "1815-13-45",
        "site": "not a uri",
        "id": "not-a-uuid",
        "ip": "999.1.1.1"
    })
}

fn pointers(body: &serde_json::Value) -> Vec<String> {
    let mut p: Vec<String> = body["error"]["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("no violations in {body}"))
        .iter()
        .map(|v| v["pointer"].as_str().unwrap().to_owned())
        .collect();
    p.sort();
    p
}

#[test]
fn formats_are_checked_by_default_and_a_contract_can_turn_them_off() {
    let sb = Sandbox::new();
    sb.write(
        "schemas/signup.v1.json",
        schema("https://json-schema.org/draft/2020-12/schema", ""),
    );
    sb.write(
        "schemas/loose.v1.json",
        schema(
            "https://json-schema.org/draft/2020-12/schema",
            r#" "x-sluice-formats": false,"#,
        ),
    );
    sb.write("flows/signup.yaml", SIGNUP_FLOW);
    sb.write("flows/loose.yaml", LOOSE_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("signup");
    sluice.wait_ready("loose");
    sluice.wait_listener(ports);

    let r = post_json(ports.listen, "/signup", &[], &good());
    assert_eq!(r.status, 200, "{r}");
    let r = post_json(ports.listen, "/signup", &[], &bad());
    assert_eq!(r.status, 422, "{r}");
    assert_eq!(r.json()["error"]["kind"], "contract", "{r}");
    assert_eq!(
        pointers(&r.json()),
        ["/at", "/born", "/email", "/id", "/ip", "/site"],
        "every format is checked: {r}"
    );
    // The switch: the same schema with `"x-sluice-formats": false` lets the strings through.
    let r = post_json(ports.listen, "/loose", &[], &bad());
    assert_eq!(r.status, 200, "{r}");
    sluice.assert_running();
}

#[test]
fn the_draft_comes_from_dollar_schema() {
    // draft-07 knows no `uuid` format (2019-09 added it): only the other five are checked.
    let sb = Sandbox::new();
    sb.write(
        "schemas/signup.v1.json",
        schema("http://json-schema.org/draft-07/schema#", ""),
    );
    sb.write("flows/signup.yaml", SIGNUP_FLOW);
    let input = sb.write("bad.json", bad().to_string());
    let out = sb.cli(
        &[
            "exec",
            "flows/signup.yaml",
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    );
    let text = out.all();
    for pointer in ["/email", "/at", "/born", "/site", "/ip"] {
        assert!(text.contains(pointer), "{pointer} is checked: {text}");
    }
    assert!(!text.contains("/id"), "draft-07 has no uuid format: {text}");

    // 2019-09 has it.
    sb.write(
        "schemas/signup.v1.json",
        schema("https://json-schema.org/draft/2019-09/schema", ""),
    );
    let out = sb.cli(
        &[
            "exec",
            "flows/signup.yaml",
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.all().contains("/id"), "{}", out.all());

    // A `$schema` sluice does not know is a load error in the schema file.
    sb.write(
        "schemas/signup.v1.json",
        schema("https://example.com/my-draft", ""),
    );
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.all().contains("signup.v1.json"), "{}", out.all());

    // A switch that is not a boolean is a load error too, saying what to write.
    sb.write(
        "schemas/signup.v1.json",
        schema(
            "https://json-schema.org/draft/2020-12/schema",
            r#" "x-sluice-formats": "off","#,
        ),
    );
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.all()
            .contains("`x-sluice-formats` must be true or false"),
        "{}",
        out.all()
    );
}
