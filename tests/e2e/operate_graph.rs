//! `sluice graph`: every flow with its trigger, named steps, route arms and sinks, and the
//! edges between flows (channel, `call`, a file sink into another flow's folder, an `http`
//! sink or `enrich` to another flow's route); `owner:` and `tags:` in it and in `/api/flows`.

use crate::support::*;
use serde_json::Value;

const INTAKE: &str = r#"name: intake
owner: team-orders
tags: [orders, pii]
trigger:
  http: { path: /orders, method: POST }
steps:
  - name: price
    script: "payload.total = 1;"
  - call: pricing
  - route:
      - when: "total > `100`"
        to: big
      - else: small
sinks:
  big:
    channel: { name: big-orders }
  small:
    file: { path: inbox/small }
"#;

const BIG: &str = r#"name: bigs
trigger:
  channel: { name: big-orders }
steps:
  - enrich:
      url: "http://127.0.0.1:8080/stock/{{sku}}"
      method: GET
      into: stock
  - to: audit
sinks:
  audit:
    http: { url: "http://localhost:8080/audit?key=x", method: POST }
"#;

const SMALL: &str = r#"name: smalls
trigger:
  file: { path: inbox/small }
steps:
  - to: out
sinks:
  out:
    stdout: {}
"#;

const PRICING: &str = r#"name: pricing
trigger:
  channel: { name: pricing-in }
steps:
  - set: { priced: "`true`" }
"#;

const AUDIT: &str = r#"name: audit
trigger:
  http: { path: /audit, method: POST }
"#;

const STOCK: &str = r#"name: stock
trigger:
  http: { path: "/stock/{sku}", method: GET }
"#;

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    for (name, text) in [
        ("intake", INTAKE),
        ("bigs", BIG),
        ("smalls", SMALL),
        ("pricing", PRICING),
        ("audit", AUDIT),
        ("stock", STOCK),
    ] {
        sb.write(&format!("flows/{name}.yaml"), text);
    }
    sb
}

fn edge<'a>(graph: &'a Value, kind: &str, from_flow: &str, to_flow: &str) -> Option<&'a Value> {
    graph["edges"].as_array()?.iter().find(|e| {
        e["kind"] == kind
            && e["from"]
                .as_str()
                .is_some_and(|f| f.starts_with(&format!("{from_flow}/")))
            && e["to"] == format!("{to_flow}/trigger").as_str()
    })
}

#[test]
fn the_graph_shows_flows_their_parts_and_the_edges_between_them() {
    let sb = sandbox();
    let out = sb.cli(&["graph", "--format", "json"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let graph = out.stdout_json();

    let intake = graph["flows"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "intake"))
        .unwrap_or_else(|| panic!("intake: {graph:#}"));
    assert_eq!(intake["owner"], "team-orders");
    assert_eq!(intake["tags"], serde_json::json!(["orders", "pii"]));

    let nodes = graph["nodes"].as_array().expect("nodes");
    let label = |id: &str| {
        nodes
            .iter()
            .find(|n| n["id"] == id)
            .and_then(|n| n["label"].as_str())
            .unwrap_or_else(|| panic!("no node {id}: {graph:#}"))
            .to_owned()
    };
    assert_eq!(label("intake/trigger"), "http POST /orders");
    assert_eq!(label("intake/steps[0]"), "price (script)");
    assert_eq!(label("intake/steps[2]/arm[0]"), "when total > `100`");
    assert_eq!(label("intake/steps[2]/arm[1]"), "else");
    assert_eq!(label("intake/sink/big"), "big (channel big-orders)");
    // An http sink shows its path only: the host, user and query may be secrets.
    assert_eq!(label("bigs/sink/audit"), "audit (http POST /audit)");

    let inner = |from: &str, to: &str| {
        graph["edges"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["from"] == from && e["to"] == to))
    };
    assert!(inner("intake/trigger", "intake/steps[0]"), "{graph:#}");
    assert!(inner("intake/steps[0]", "intake/steps[1]"), "{graph:#}");
    assert!(
        inner("intake/steps[2]/arm[0]", "intake/sink/big"),
        "{graph:#}"
    );
    assert!(
        inner("intake/steps[2]/arm[1]", "intake/sink/small"),
        "{graph:#}"
    );

    assert!(
        edge(&graph, "channel", "intake", "bigs").is_some(),
        "{graph:#}"
    );
    assert!(
        edge(&graph, "call", "intake", "pricing").is_some(),
        "{graph:#}"
    );
    assert!(
        edge(&graph, "file", "intake", "smalls").is_some(),
        "{graph:#}"
    );
    assert!(edge(&graph, "http", "bigs", "audit").is_some(), "{graph:#}");
    assert!(
        edge(&graph, "http", "bigs", "stock").is_some(),
        "enrich: {graph:#}"
    );
    assert!(
        edge(&graph, "http", "bigs", "intake").is_none(),
        "{graph:#}"
    );

    let mermaid = sb.cli(&["graph"], None);
    assert_eq!(mermaid.code, Some(0), "{}", mermaid.all());
    assert!(
        mermaid.stdout.starts_with("flowchart LR"),
        "{}",
        mermaid.stdout
    );
    assert!(
        mermaid
            .stdout
            .contains("intake · owner: team-orders · tags: orders, pii")
    );
    assert!(
        mermaid.stdout.contains("-.->|\"channel big-orders\"|"),
        "{}",
        mermaid.stdout
    );

    let dot = sb.cli(&["graph", "--format", "dot"], None);
    assert_eq!(dot.code, Some(0), "{}", dot.all());
    assert!(dot.stdout.starts_with("digraph sluice {"), "{}", dot.stdout);
    // Graphviz itself reads it.
    if program_available("dot") {
        let svg = sb.path("flows.svg");
        let mut child = std::process::Command::new("dot")
            .args(["-Tsvg", "-o"])
            .arg(&svg)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("dot starts");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(dot.stdout.as_bytes())
            .expect("dot reads");
        let status = child.wait().expect("dot ends");
        assert!(status.success(), "dot refused:\n{}", dot.stdout);
        let svg = std::fs::read_to_string(svg).expect("an svg");
        assert!(svg.contains("price (script)"), "{svg}");
    }
}

#[test]
fn owner_and_tags_show_in_the_flows_api_and_a_broken_flow_is_named() {
    let sb = sandbox();
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("intake");
    let flow = admin_flow(ports, "intake");
    assert_eq!(flow["owner"], "team-orders", "{flow:#}");
    assert_eq!(
        flow["tags"],
        serde_json::json!(["orders", "pii"]),
        "{flow:#}"
    );
    let audit = admin_flow(ports, "audit");
    assert!(audit["owner"].is_null(), "{audit:#}");
    assert_eq!(audit["tags"], serde_json::json!([]), "{audit:#}");
    sluice.kill();

    sb.write("flows/broken.yaml", "name: broken\nowner: [not, text]\n");
    let out = sb.cli(&["graph"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("broken.yaml:2"), "{}", out.all());
    assert!(out.stdout.is_empty(), "no graph: {}", out.all());
}
