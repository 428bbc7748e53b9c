//! Dead letters you can act on: `sluice dlq list | show | replay | purge` against a running
//! `sluice run` (through its admin API, behind its token and cross-site checks), and the
//! dead-letter depth metric.

use crate::support::cli::CliOutput;
use crate::support::*;
use serde_json::{Value, json};

const ORDERS_FLOW: &str = r#"name: orders
trigger:
  file:
    path: inbox/orders
    glob: "*.json"
    @FAST@
steps:
  - script: |
      @RULE@
  - set:
      replayed_from: "meta('replayed_from')"
      replay_count: "meta('replay_count')"
      origin: "meta('file.name')"
  - to: out
sinks:
  out:
    file: { path: outbox/orders, name: "{{id}}.json" }
errors:
  dead_letter:
    file: { path: dead-letter/orders }
"#;

/// The first version refuses every order with a `fail` field; the fixed one only `always`.
const REFUSE_ALL: &str = r#"if "fail" in payload { throw "refused " + payload.fail; }"#;
const REFUSE_ALWAYS: &str =
    r#"if "fail" in payload && payload.fail == "always" { throw "refused " + payload.fail; }"#;

const TOKEN: &str = "dlq-adm-t0ken";

fn orders_flow(rule: &str) -> String {
    ORDERS_FLOW
        .replace("@FAST@", FAST_TRIGGER)
        .replace("@RULE@", rule)
}

struct Dlq<'a> {
    sb: &'a Sandbox,
    admin: String,
}

impl Dlq<'_> {
    fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> CliOutput {
        let mut all = vec!["dlq", "--admin", &self.admin, "--admin-token", TOKEN];
        all.extend_from_slice(args);
        self.sb.cli_env(&all, envs)
    }

    fn ok(&self, args: &[&str]) -> CliOutput {
        let out = self.run(args, &[]);
        assert_eq!(out.code, Some(0), "sluice dlq {args:?}:\n{}", out.all());
        out
    }

    fn list(&self) -> Vec<Value> {
        self.ok(&["list", "--json"])
            .stdout_json()
            .as_array()
            .cloned()
            .expect("a list")
    }

    /// The id of the entry of order `order`.
    fn id_of(&self, order: &str) -> String {
        let entries = self.list();
        for entry in &entries {
            let id = entry["id"].as_str().expect("an id").to_owned();
            let shown = self.ok(&["show", &id]).stdout_json();
            if shown["message"]["id"] == order {
                return id;
            }
        }
        panic!("no dead letter of {order}: {entries:#?}");
    }
}

fn depth(ports: Ports) -> Option<f64> {
    scrape_with(ports, Some(TOKEN)).value("sluice_dead_letters", &[("flow", "orders")])
}

#[test]
fn dead_letters_are_listed_shown_replayed_and_purged() {
    let sb = Sandbox::new();
    sb.write("flows/orders.yaml", orders_flow(REFUSE_ALL));
    let (mut sluice, ports) = Sluice::serve(&sb, &["--admin-token", TOKEN], &[]);
    sluice.wait_ready("orders");
    for (order, fail) in [
        ("a-1", "once"),
        ("a-2", "always"),
        ("a-3", "once"),
        ("a-4", "once"),
    ] {
        sb.drop_json(
            "inbox/orders",
            &format!("{order}.json"),
            &json!({"id": order, "fail": fail}),
        );
    }
    sluice.expect_within(secs(30), "four dead letters", || {
        sb.count("dead-letter/orders") == 4
    });
    sluice.expect_within(secs(10), "a dead-letter depth of 4", || {
        depth(ports) == Some(4.0)
    });

    // The fix is deployed: the replays run through the current version.
    let before = admin_flow_with(ports, "orders", TOKEN)["version"].clone();
    sb.write_atomic("flows/orders.yaml", orders_flow(REFUSE_ALWAYS));
    sluice.expect_within(secs(30), "the fixed version running", || {
        admin_flow_with(ports, "orders", TOKEN)["version"] != before
    });

    let dlq = Dlq {
        sb: &sb,
        admin: ports.admin.to_string(),
    };
    let entries = dlq.list();
    assert_eq!(entries.len(), 4, "{entries:#?}");
    for entry in &entries {
        assert_eq!(entry["flow"], "orders", "{entry:#}");
        assert_eq!(entry["kind"], "script", "{entry:#}");
        assert_eq!(entry["id"], entry["message_id"], "{entry:#}");
    }
    let text = dlq.ok(&["list", "orders"]).stdout;
    assert!(text.starts_with("ID"), "a table: {text}");
    assert!(text.contains("refused once"), "{text}");

    // show: the original message, its metadata, the error.
    let a1 = dlq.id_of("a-1");
    let shown = dlq.ok(&["show", &a1]).stdout_json();
    assert_eq!(
        shown["message"],
        json!({"id": "a-1", "fail": "once"}),
        "{shown:#}"
    );
    assert_eq!(shown["meta"]["file.name"], "a-1.json", "{shown:#}");
    assert_eq!(shown["error"]["message_id"], a1.as_str(), "{shown:#}");

    // A replay that succeeds: original metadata plus replayed_from and replay_count; the
    // entry moves to replayed/ with the outcome.
    let out = dlq.ok(&["replay", &a1]);
    assert!(out.stdout.contains("delivered"), "{}", out.all());
    let written = sluice.wait_json(&sb, "outbox/orders/a-1.json", secs(10));
    assert_eq!(written["replayed_from"], a1.as_str(), "{written:#}");
    assert_eq!(written["replay_count"], "1", "{written:#}");
    assert_eq!(written["origin"], "a-1.json", "{written:#}");
    assert!(!sb.exists(&format!("dead-letter/orders/{a1}.json")));
    let kept = sb.read_json(&format!("dead-letter/orders/replayed/{a1}.json"));
    assert_eq!(kept["replays"][0]["outcome"], "delivered", "{kept:#}");
    assert_eq!(kept["message"]["id"], "a-1", "{kept:#}");

    // A replay that fails again: the entry stays, the new error appended; exit 1.
    let a2 = dlq.id_of("a-2");
    let out = dlq.run(&["replay", &a2], &[]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("refused always"), "{}", out.all());
    let entry = sb.read_json(&format!("dead-letter/orders/{a2}.json"));
    let replays = entry["replays"].as_array().expect("replays");
    assert_eq!(replays.len(), 1, "{entry:#}");
    assert_eq!(replays[0]["outcome"], "error", "{entry:#}");
    assert_eq!(replays[0]["error"]["kind"], "script", "{entry:#}");
    assert_eq!(
        entry["error"]["message_id"],
        a2.as_str(),
        "the first error stays"
    );
    assert!(!sb.exists("outbox/orders/a-2.json"));

    // --edit: the operator corrects the message in an editor; the second replay counts 2.
    let out = dlq.run(
        &["replay", &a2, "--edit"],
        &[("VISUAL", "sed -i s/always/fixed/"), ("EDITOR", "false")],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let written = sluice.wait_json(&sb, "outbox/orders/a-2.json", secs(10));
    assert_eq!(written["fail"], "fixed", "{written:#}");
    assert_eq!(written["replay_count"], "2", "{written:#}");
    let kept = sb.read_json(&format!("dead-letter/orders/replayed/{a2}.json"));
    assert_eq!(kept["replays"][1]["edited"], true, "{kept:#}");

    // purge: gone, and not kept in replayed/.
    let a3 = dlq.id_of("a-3");
    dlq.ok(&["purge", &a3]);
    assert!(!sb.exists(&format!("dead-letter/orders/{a3}.json")));
    assert!(!sb.exists(&format!("dead-letter/orders/replayed/{a3}.json")));
    let out = dlq.run(&["purge", &a3], &[]);
    assert_eq!(out.code, Some(1), "purging it twice: {}", out.all());
    assert!(out.stdout.contains("missing"), "{}", out.all());

    // --all --flow: whatever is left.
    let out = dlq.ok(&["replay", "--all", "--flow", "orders"]);
    assert!(out.stdout.contains("delivered"), "{}", out.all());
    sluice.wait_json(&sb, "outbox/orders/a-4.json", secs(10));
    assert!(dlq.list().is_empty());
    sluice.expect_within(secs(10), "a dead-letter depth of 0", || {
        depth(ports) == Some(0.0)
    });
    sluice.assert_running();
}

#[test]
fn dead_letter_actions_keep_the_admin_checks() {
    let sb = Sandbox::new();
    sb.write("flows/orders.yaml", orders_flow(REFUSE_ALL));
    let (mut sluice, ports) = Sluice::serve(&sb, &["--admin-token", TOKEN], &[]);
    sluice.wait_ready("orders");
    sb.drop_json(
        "inbox/orders",
        "b-1.json",
        &json!({"id": "b-1", "fail": "x"}),
    );
    sluice.expect_within(secs(30), "a dead letter", || {
        sb.count("dead-letter/orders") == 1
    });
    let id = sb
        .names("dead-letter/orders")
        .into_iter()
        .next()
        .expect("one entry")
        .trim_end_matches(".json")
        .to_owned();

    // Without the token: refused, and the CLI says how to pass it.
    let admin = ports.admin.to_string();
    let out = sb.cli(&["dlq", "--admin", &admin, "list"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("401") && out.stderr.contains("--admin-token"),
        "{}",
        out.all()
    );
    for path in ["/api/dead-letters", &format!("/api/dead-letters/{id}")] {
        assert_eq!(admin_get(ports, path, None).status, 401, "{path}");
    }
    let body = json!({"ids": [id]}).to_string();
    for path in ["/api/dead-letters/replay", "/api/dead-letters/purge"] {
        let bearer = format!("Bearer {TOKEN}");
        let r = http(
            ports.admin,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 401, "{path} without a token: {r}");
        // A cross-site page cannot replay or purge, token or not.
        let r = http(
            ports.admin,
            "POST",
            path,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &bearer),
                ("Origin", "https://evil.example"),
            ],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 403, "{path} cross-site: {r}");
        let r = http(
            ports.admin,
            "POST",
            path,
            &[("Content-Type", "text/plain"), ("Authorization", &bearer)],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 415, "{path} as a form: {r}");
    }
    // A path in an id is refused, not followed.
    let r = admin_get(ports, "/api/dead-letters/..%2Fflows%2Forders", Some(TOKEN));
    assert_eq!(r.status, 400, "{r}");
    assert!(
        sb.exists(&format!("dead-letter/orders/{id}.json")),
        "nothing moved"
    );
    assert!(sb.exists("flows/orders.yaml"));
    sluice.assert_running();
}
