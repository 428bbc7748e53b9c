//! Outgoing HTTP that a payload cannot redirect and that never prints a secret (issue 9,
//! items 7 and 9): URL template values are percent-encoded for their place, a template may
//! not produce the scheme, host or port, redirects to another host are not followed, and
//! values from `${env:…}` never show up in the log, dead letters, sidecars, the admin API or
//! `sluice check`.

use crate::support::*;
use serde_json::Value;

/// A flow whose `enrich` step and `http` sink both render payload values into the path
/// and the query.
fn paths_flow(base: &str) -> String {
    format!(
        r#"name: paths
trigger:
  file:
    path: inbox/paths
    glob: "*.json"
    {FAST_TRIGGER}
steps:
  - enrich:
      url: "{base}/lookup/{{{{seg}}}}?q={{{{q}}}}"
      into: looked
  - to: api
sinks:
  api:
    http:
      url: "{base}/api/{{{{seg}}}}/items?q={{{{q}}}}&tag={{{{tag}}}}"
errors:
  dead_letter:
    file: {{ path: dead-letter/paths }}
"#
    )
}

#[test]
fn payload_values_stay_inside_their_path_segment_and_query_value() {
    let server = TestServer::start(|_, _| Answer::status(200));
    let sb = Sandbox::new();
    sb.write("flows/paths.yaml", paths_flow(&server.url("")));
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("paths");

    sb.drop_json(
        "inbox/paths",
        "a.json",
        &json!({ "seg": "../admin", "q": "x?admin=1#", "tag": "t" }),
    );
    sb.drop_json(
        "inbox/paths",
        "b.json",
        &json!({ "seg": "%2e%2e", "q": "a&b=c", "tag": "x y/z" }),
    );
    // A whole segment of `..` cannot be encoded away (`%2e%2e` is a dot segment too): refused.
    sb.drop_json(
        "inbox/paths",
        "c.json",
        &json!({ "seg": "..", "q": "c-1", "tag": "t" }),
    );
    sluice.expect_within(secs(20), "a and b delivered, c settled", || {
        sb.exists("inbox/paths/.done/a.json")
            && sb.exists("inbox/paths/.done/b.json")
            && (sb.count("dead-letter/paths") == 1 || sb.exists("inbox/paths/.done/c.json"))
    });

    let targets: Vec<String> = server.requests().into_iter().map(|r| r.target).collect();
    for expected in [
        "/lookup/..%2Fadmin?q=x%3Fadmin%3D1%23",
        "/api/..%2Fadmin/items?q=x%3Fadmin%3D1%23&tag=t",
        "/lookup/%252e%252e?q=a%26b%3Dc",
        "/api/%252e%252e/items?q=a%26b%3Dc&tag=x%20y%2Fz",
    ] {
        assert!(
            targets.iter().any(|t| t == expected),
            "a request for {expected} arrived, encoded: {targets:#?}\n{}",
            sluice.log_tail(20)
        );
    }
    assert_eq!(targets.len(), 4, "only a and b were sent: {targets:#?}");
    assert!(
        !targets.iter().any(|t| t.starts_with("/admin")),
        "no value reached another path: {targets:#?}"
    );

    let letter = sb.only_json("dead-letter/paths");
    assert_eq!(letter["message"]["q"], "c-1", "{letter:#}");
    let message = letter["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`..`") && message.contains("not allowed"),
        "the dead letter says why: {letter:#}"
    );
    assert_eq!(letter["error"]["attempts"], 1, "not retried: {letter:#}");
}

#[test]
fn a_template_in_the_host_or_port_is_a_load_error() {
    let sb = Sandbox::new();
    let sink = "name: hop\ntrigger:\n  file: { path: inbox/hop }\nsinks:\n  out:\n    http:\n      url: \"http://{{host}}:{{port}}/orders\"\n";
    sb.write("flows/hop.yaml", sink);
    let enrich = "name: peek\ntrigger:\n  file: { path: inbox/peek }\nsteps:\n  - enrich:\n      url: \"http://127.0.0.1:{{port}}/orders\"\n      into: x\n";
    sb.write("flows/peek.yaml", enrich);
    let out = sb.cli(&["check"], None);
    assert_eq!(
        out.code,
        Some(1),
        "check refuses both flows:\n{}",
        out.all()
    );
    let text = out.all();
    for (file, source, hole) in [
        ("flows/hop.yaml", sink, "{{host}}"),
        ("flows/peek.yaml", enrich, "{{port}}"),
    ] {
        let at = format!("{file}:{}:{}", line_of(source, hole), col_of(source, hole));
        assert!(text.contains(&at), "the error points at {at}:\n{text}");
    }
    assert!(
        text.contains("may not produce the host or port"),
        "says what is wrong:\n{text}"
    );
    assert!(
        text.contains("fixed text") && text.contains("`route` step"),
        "says what to do instead:\n{text}"
    );
}

#[test]
fn secret_headers_never_follow_a_redirect_to_another_host() {
    let other = TestServer::start(|_, _| Answer::status(200));
    let elsewhere = other.url("/landed");
    let server = TestServer::start(move |_, r| match r.target.as_str() {
        "/hop/same" => Answer::status(307).with_header("location", "/landed"),
        "/hop/other" => Answer::status(307).with_header("location", &elsewhere),
        _ => Answer::status(200),
    });
    let sb = Sandbox::new();
    sb.write(
        "flows/hop.yaml",
        format!(
            r#"name: hop
trigger:
  file:
    path: inbox/hop
    glob: "*.json"
    {FAST_TRIGGER}
steps:
  - to: out
sinks:
  out:
    http:
      url: "{}/hop/{{{{to}}}}"
      headers:
        authorization: "Bearer ${{env:HOP_TOKEN}}"
        x-api-key: "${{env:HOP_KEY}}"
errors:
  dead_letter:
    file: {{ path: dead-letter/hop }}
"#,
            server.url("")
        ),
    );
    let env = [("HOP_TOKEN", "hop-token-5521"), ("HOP_KEY", "hop-key-8830")];
    let mut sluice = Sluice::start_with_env(&sb, &["run"], &env);
    sluice.wait_ready("hop");

    sb.drop_json("inbox/hop", "same.json", &json!({ "to": "same" }));
    sluice.expect_within(secs(20), "same.json delivered", || {
        sb.exists("inbox/hop/.done/same.json")
    });
    // A redirect on the same host is followed, with the headers.
    let landed: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.target == "/landed")
        .collect();
    assert_eq!(landed.len(), 1, "{:#?}", server.requests());
    assert_eq!(landed[0].header("x-api-key"), Some("hop-key-8830"));
    assert_eq!(
        landed[0].header("authorization"),
        Some("Bearer hop-token-5521")
    );

    sb.drop_json("inbox/hop", "other.json", &json!({ "to": "other" }));
    sluice.expect_within(secs(20), "other.json dead-lettered or sent on", || {
        sb.count("dead-letter/hop") == 1 || other.count() > 0
    });
    assert_eq!(
        other.count(),
        0,
        "nothing was sent to the other host: {:#?}",
        other.requests()
    );
    let letter = sb.only_json("dead-letter/hop");
    let message = letter["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("redirected to another host") && message.contains(&other.url("")),
        "the dead letter says where it was sent: {letter:#}"
    );
    assert_eq!(letter["error"]["attempts"], 1, "not retried: {letter:#}");
}

const USER: &str = "sink-user-4821";
const PASS: &str = "sink-pass-9931";
const TOKEN: &str = "sink-token-7719";

/// An `http` sink with credentials from the environment in its URL (userinfo and a query
/// token), against `base` (a failing server or a closed port).
fn secret_flow(name: &str, host: &str) -> String {
    format!(
        r#"name: {name}
trigger:
  file:
    path: inbox/{name}
    glob: "*.json"
    {FAST_TRIGGER}
steps:
  - to: out
sinks:
  out:
    http:
      url: "http://${{env:SINK_USER}}:${{env:SINK_PASS}}@{host}/ingest/{{{{id}}}}?token=${{env:SINK_TOKEN}}"
      timeout: 2s
errors:
  retry: {{ attempts: 2, backoff: 50ms }}
  dead_letter:
    file: {{ path: dead-letter/{name} }}
"#
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [USER, PASS, TOKEN] {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret}:\n{text}"
        );
    }
}

#[test]
fn secrets_from_the_environment_are_printed_nowhere() {
    let server = TestServer::start(|_, _| Answer::status(503));
    let closed = free_port();
    let sb = Sandbox::new();
    sb.write(
        "flows/failing.yaml",
        secret_flow("failing", &server.addr.to_string()),
    );
    sb.write(
        "flows/refused.yaml",
        secret_flow("refused", &format!("127.0.0.1:{closed}")),
    );
    // A broken flow whose error message would quote the URL.
    let broken = "name: broken\ntrigger:\n  file: { path: inbox/broken }\nsinks:\n  out:\n    http:\n      url: \"htp://${env:SINK_USER}:${env:SINK_PASS}@127.0.0.1/x?token=${env:SINK_TOKEN}\"\n";
    sb.write("flows/broken.yaml", broken);
    let env = [
        ("SINK_USER", USER),
        ("SINK_PASS", PASS),
        ("SINK_TOKEN", TOKEN),
    ];
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &env);
    sluice.wait_ready("failing");
    sluice.wait_ready("refused");

    for flow in ["failing", "refused"] {
        sb.drop_json(
            &format!("inbox/{flow}"),
            "o-1.json",
            &json!({ "id": "o-1" }),
        );
    }
    sluice.expect_within(secs(30), "both messages failed and dead-lettered", || {
        ["failing", "refused"].iter().all(|f| {
            sb.count(&format!("dead-letter/{f}")) == 1
                && sb.exists(&format!("inbox/{f}/.error/o-1.json.error.json"))
        })
    });

    // The server got the credentials (as basic auth) and the token: the sink still works.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "two attempts: {requests:#?}");
    assert_eq!(
        requests[0].target,
        format!("/ingest/o-1?token={TOKEN}"),
        "{requests:#?}"
    );
    assert!(requests[0].header("authorization").is_some());

    for flow in ["failing", "refused"] {
        let letter = sb.only_json(&format!("dead-letter/{flow}"));
        let message = letter["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("***"),
            "the dead letter still names the URL, masked: {letter:#}"
        );
        assert_no_secret("a dead letter", &letter.to_string());
        let sidecar = sb.read_json(&format!("inbox/{flow}/.error/o-1.json.error.json"));
        assert_no_secret("an .error.json sidecar", &sidecar.to_string());
    }
    let failing = sb.only_json("dead-letter/failing");
    assert!(
        failing["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&server.addr.to_string()) && m.contains("503")),
        "the host and the status are shown: {failing:#}"
    );

    let letters = admin_get(ports, "/api/dead-letters", None);
    assert_eq!(letters.status, 200, "{letters}");
    let listed: Value = letters.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed:#}");
    assert_no_secret("/api/dead-letters", &letters.text());
    let flows = admin_get(ports, "/api/flows", None);
    assert!(flows.text().contains("broken"), "{flows}");
    assert_no_secret("/api/flows", &flows.text());

    sluice.expect_within(secs(10), "the broken flow's load error is logged", || {
        sluice_log_has(&sb, "broken.yaml")
    });
    assert_no_secret("the log", &sluice.log());

    let mut check = Sluice::start_with_env(&sb, &["check"], &env);
    let status = check.wait_exit(secs(60)).expect("sluice check finishes");
    assert!(!status.success(), "the broken flow fails the check");
    let output = check.log();
    assert!(output.contains("broken.yaml"), "{output}");
    assert!(
        output.contains("htp://***@127.0.0.1"),
        "the URL is shown without userinfo: {output}"
    );
    assert_no_secret("`sluice check`", &output);
}

fn sluice_log_has(sb: &Sandbox, needle: &str) -> bool {
    std::fs::read_to_string(sb.path("sluice.log")).is_ok_and(|log| log.contains(needle))
}
