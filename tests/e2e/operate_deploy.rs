//! deploy/: the alert rules pass `promtool check rules` and their unit tests (`promtool test
//! rules`), every query of the rules and of the Grafana dashboard is valid PromQL, and every
//! sluice metric they use is one sluice documents (and so exports).

use crate::support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

fn promtool(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The `sluice_*` metric families named in `text` (`_bucket`, `_count`, `_sum` folded).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sluice_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/sluice-dashboard.json"))
        .expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            panel["title"].is_string() && panel["gridPos"].is_object(),
            "{panel:#}"
        );
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("an expr").to_owned());
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        queries.push(annotation["expr"].as_str().expect("an expr").to_owned());
    }
    assert!(queries.len() >= 10, "{queries:?}");
    queries
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    if !program_available("promtool") {
        return;
    }
    let dir = repo_file("deploy/prometheus");
    let checked = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "no test for {line}"
        );
    }
}

#[test]
fn the_dashboard_queries_are_valid_promql() {
    if !program_available("promtool") {
        return;
    }
    let sb = Sandbox::new();
    // Grafana's variables and macros, as Grafana would fill them in.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in dashboard_queries().iter().enumerate() {
        let query = query
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$flow", ".*");
        let quoted = serde_json::to_string(&query).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {quoted}\n"
        ));
    }
    sb.write("dashboard-rules.yml", &rules);
    promtool(&["check", "rules", "dashboard-rules.yml"], sb.root());
}

#[test]
fn deploy_uses_only_documented_metrics_and_probes() {
    let docs = std::fs::read_to_string(repo_file("docs/http-and-operations.md")).unwrap();
    let documented = metric_names(&docs);
    let rules = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let used: BTreeSet<String> = metric_names(&rules)
        .into_iter()
        .chain(dashboard_queries().iter().flat_map(|q| metric_names(q)))
        .collect();
    assert!(used.len() >= 10, "{used:?}");
    let unknown: Vec<&String> = used.difference(&documented).collect();
    assert!(unknown.is_empty(), "not in the Metrics table: {unknown:?}");

    let manifest = std::fs::read_to_string(repo_file("deploy/kubernetes/sluice.yaml")).unwrap();
    for needed in [
        "path: /healthz",
        "path: /readyz",
        "configMap: { name: sluice-flows }",
        "secretKeyRef: { name: sluice-admin, key: token }",
    ] {
        assert!(manifest.contains(needed), "the manifest lacks `{needed}`");
    }
    let unit = std::fs::read_to_string(repo_file("deploy/systemd/sluice.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/sluice run"),
        "{unit}"
    );
    assert!(unit.contains("KillSignal=SIGTERM"), "{unit}");
}
