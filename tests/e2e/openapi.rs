//! `sluice openapi` and `GET /api/openapi.json`: the OpenAPI 3.1 document of the `http`
//! flows, validated with `openapi-spec-validator` (from PyPI, installed once into a venv
//! under the target folder), and one request generated from it checked against the flow.

use crate::support::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const QUOTE_REQUEST: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["qty", "email"],
  "properties": {
    "qty": { "type": "integer", "minimum": 1 },
    "email": { "type": "string", "format": "email" }
  },
  "examples": [{ "qty": 3, "email": "ada@example.com" }]
}"#;

const QUOTE: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["sku", "qty", "cents"],
  "properties": {
    "sku": { "type": "string" },
    "qty": { "type": "integer" },
    "cents": { "type": "integer" }
  }
}"#;

const QUOTES_FLOW: &str = r#"name: quotes
description: Price a quantity of one article.
trigger:
  http:
    path: "/quotes/{sku}"
    method: POST
    auth: { bearer: "${env:QUOTES_TOKEN}" }
contract:
  input: quote-request.v1
  output: quote.v1
steps:
  - transform: "{sku: meta('http.path.sku'), qty: qty}"
  - script: "payload.cents = payload.qty * 250;"
  - reply: { status: 201 }
  - to: book
sinks:
  book:
    file: { path: out/quotes, name: "{{sku}}.json" }
"#;

const ITEMS_FLOW: &str = r#"name: items
trigger:
  http:
    path: "/items/{id}"
    method: GET
    auth: { api_key: { header: x-api-key, value: "${env:ITEMS_KEY}" } }
steps:
  - filter: "meta('http.path.id') != 'hidden'"
  - transform: "{id: meta('http.path.id')}"
"#;

const HOOK_FLOW: &str = r#"name: hook
trigger:
  http:
    path: /hooks/shop
    auth: { hmac: { secret: "${env:HOOK_SECRET}", header: x-signature, prefix: "sha256=" } }
steps:
  - try:
      - enrich: { url: "http://127.0.0.1:9/never", into: extra }
  - catch:
      - reply: { status: 503 }
"#;

const FILE_FLOW: &str = r#"name: not-http
trigger:
  file: { path: inbox/x }
"#;

const SECRETS: [(&str, &str); 3] = [
    ("QUOTES_TOKEN", "tok-quotes-5e3f"),
    ("ITEMS_KEY", "key-items-9a1b"),
    ("HOOK_SECRET", "hmac-secret-77c2"),
];

/// The venv's python with openapi-spec-validator, installed once per target folder; `None`
/// (after printing why) when it cannot be installed, unless SLUICE_REQUIRE_SERVICES=1.
fn validator_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openapi-venv");
        let python = venv.join("bin/python");
        let works = |python: &PathBuf| {
            Command::new(python)
                .args(["-c", "import openapi_spec_validator, jsonschema"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if works(&python) {
            return Ok(python);
        }
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        if !python.exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--timeout",
            "30",
            "openapi-spec-validator",
        ]))?;
        if works(&python) {
            Ok(python)
        } else {
            Err("openapi-spec-validator was installed but cannot be imported".to_owned())
        }
    });
    match found {
        Ok(python) => Some(python.clone()),
        Err(why) if std::env::var("SLUICE_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("openapi-spec-validator is required (SLUICE_REQUIRE_SERVICES=1): {why}")
        }
        Err(why) => {
            eprintln!("skipping: cannot install openapi-spec-validator from PyPI: {why}");
            None
        }
    }
}

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("schemas/quote-request.v1.json", QUOTE_REQUEST);
    sb.write("schemas/quote.v1.json", QUOTE);
    sb.write("flows/quotes.yaml", QUOTES_FLOW);
    sb.write("flows/items.yaml", ITEMS_FLOW);
    sb.write("flows/hook.yaml", HOOK_FLOW);
    sb.write("flows/not-http.yaml", FILE_FLOW);
    sb
}

#[test]
fn the_document_describes_every_http_flow_and_never_a_secret() {
    let sb = sandbox();
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &SECRETS);
    for flow in ["quotes", "items", "hook", "not-http"] {
        sluice.wait_ready(flow);
    }
    let served = admin_get(ports, "/api/openapi.json", None);
    assert_eq!(served.status, 200, "{served}");
    let doc = served.json();
    let text = doc.to_string();
    for (_, secret) in SECRETS {
        assert!(!text.contains(secret), "a secret in the document: {text}");
    }
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], format!("http://{}", ports.listen));
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths.keys().collect::<Vec<_>>(),
        ["/hooks/shop", "/items/{id}", "/quotes/{sku}"],
        "every http flow, nothing else"
    );

    let quotes = &doc["paths"]["/quotes/{sku}"]["post"];
    assert_eq!(quotes["operationId"], "quotes");
    assert_eq!(quotes["summary"], "Price a quantity of one article.");
    assert_eq!(quotes["parameters"][0]["name"], "sku");
    assert_eq!(quotes["parameters"][0]["in"], "path");
    assert_eq!(quotes["security"], json!([{ "bearer": [] }]));
    assert_eq!(
        quotes["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/quote-request.v1"
    );
    let responses = quotes["responses"].as_object().unwrap();
    for status in [
        "201", "400", "401", "413", "415", "422", "500", "503", "504",
    ] {
        assert!(responses.contains_key(status), "{status} in {responses:?}");
    }
    assert!(
        !responses.contains_key("200"),
        "the top-level reply makes every good answer 201: {responses:?}"
    );
    assert_eq!(
        responses["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/quote.v1",
        "the 2xx body is the output contract"
    );
    assert_eq!(
        responses["422"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );
    assert_eq!(
        doc["components"]["schemas"]["quote-request.v1"]["required"],
        json!(["qty", "email"])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({ "type": "http", "scheme": "bearer" })
    );

    let items = &doc["paths"]["/items/{id}"]["get"];
    assert!(items.get("requestBody").is_none(), "a GET has no body");
    let item_responses = items["responses"].as_object().unwrap();
    assert!(item_responses.contains_key("200") && item_responses.contains_key("204"));
    assert!(!item_responses.contains_key("415"), "{item_responses:?}");
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key_x_api_key"],
        json!({ "type": "apiKey", "in": "header", "name": "x-api-key" })
    );
    let hook = &doc["paths"]["/hooks/shop"]["post"];
    assert!(
        hook["responses"]["503"].is_object(),
        "the reply in catch: {hook}"
    );
    assert!(hook["responses"]["502"].is_object(), "the enrich: {hook}");
    assert_eq!(
        doc["components"]["securitySchemes"]["hmac_x_signature"]["name"],
        "x-signature"
    );

    // `sluice openapi` prints the same document.
    let server = format!("http://{}", ports.listen);
    let envs: Vec<(String, String)> = SECRETS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = Command::new(SLUICE)
        .current_dir(sb.root())
        .args(["openapi", "--server", &server])
        .envs(envs)
        .output()
        .expect("run sluice openapi");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(printed, doc);
    sluice.assert_running();
}

#[test]
fn the_document_validates_and_a_generated_request_gets_a_documented_answer() {
    let Some(python) = validator_python() else {
        return;
    };
    let sb = sandbox();
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &SECRETS);
    sluice.wait_ready("quotes");
    sluice.wait_listener(ports);
    let served = admin_get(ports, "/api/openapi.json", None);
    assert_eq!(served.status, 200, "{served}");
    sb.write("openapi.json", &served.body);
    let script = repo_file("tests/e2e/support/openapi_check.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(sb.path("openapi.json"))
        .arg(format!("http://{}", ports.listen))
        .args(["/quotes/{sku}", "post", SECRETS[0].1])
        .output()
        .expect("run the check script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the document or the answer does not hold: {stderr}\n{}",
        sluice.log_tail(20)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(report["valid"], true);
    assert_eq!(report["status"], 201, "{report}");
    assert_eq!(
        report["answer"],
        json!({ "sku": "KETTLE-1", "qty": 3, "cents": 750 })
    );
    assert_eq!(report["refused"][0], 422, "{report}");
    assert_eq!(
        report["refused"][1]["error"]["kind"], "contract",
        "{report}"
    );
    assert_eq!(report["anonymous"], 401, "{report}");
    let written = sluice.wait_json(&sb, "out/quotes/KETTLE-1.json", secs(10));
    assert_eq!(written["cents"], 750);
}

#[test]
fn no_document_while_a_flow_is_invalid() {
    let sb = sandbox();
    sb.write(
        "flows/broken.yaml",
        "name: broken\ntrigger:\n  http: { path: /b }\nsteps:\n  - logg: x\n",
    );
    let out = sb.cli(&["openapi"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.trim().is_empty(), "{}", out.all());
    assert!(out.all().contains("broken.yaml:5:"), "{}", out.all());
}
