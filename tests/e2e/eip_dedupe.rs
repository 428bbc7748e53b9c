//! `dedupe` with the persistent (redb) store: the same 500 messages sent twice, with a
//! SIGKILL and a restart in between, come out 500 times.

use crate::support::*;

const FLOW: &str = r#"name: intake
concurrency: 4
trigger:
  file:
    path: inbox/intake
    glob: "*.json"
    @FAST@
steps:
  - dedupe:
      key: id
      ttl: 1h
      path: state/intake-dedupe.redb
  - to: out
sinks:
  out:
    # A fresh name per message: without dedupe the second round would add 500 files.
    file: { path: outbox/intake, name: "{{meta('message_id')}}.json" }
"#;

fn send_all(sb: &Sandbox) {
    for i in 0..500 {
        sb.drop_json(
            "inbox/intake",
            &format!("m-{i:03}.json"),
            &json!({"id": format!("m-{i:03}"), "n": i}),
        );
    }
}

#[test]
fn the_persistent_store_drops_duplicates_across_a_restart() {
    let sb = Sandbox::new();
    sb.write("flows/intake.yaml", FLOW.replace("@FAST@", FAST_TRIGGER));
    let mut first = Sluice::run(&sb);
    first.wait_ready("intake");
    send_all(&sb);
    let done = sb.path("inbox/intake/.done");
    first.expect_within(secs(60), "500 files done", || count_files(&done) >= 500);
    assert_eq!(sb.count("outbox/intake"), 500);
    first.kill();

    let mut second = Sluice::run(&sb);
    second.wait_ready("intake");
    let mark = second.mark();
    send_all(&sb);
    second.expect_within(secs(60), "the second 500 files done", || {
        count_files(&done) >= 1000
    });
    assert_eq!(sb.count("outbox/intake"), 500, "duplicates came out");
    assert_eq!(
        sb.count("inbox/intake/.error"),
        0,
        "{}",
        second.log_tail(20)
    );
    let duplicates = second
        .log_since(mark)
        .lines()
        .filter(|l| l.contains("duplicate dropped"))
        .count();
    assert_eq!(duplicates, 500, "every duplicate is logged");
    second.assert_running();
}

#[test]
fn a_failed_message_gives_its_key_back() {
    let sb = Sandbox::new();
    // The sink path is a file at first: the message fails, its key is removed, and the same
    // message sent again once the sink works is delivered, not dropped as a duplicate.
    sb.write("outbox/intake", "not a folder");
    sb.write(
        "flows/intake.yaml",
        FLOW.replace("@FAST@", FAST_TRIGGER)
            .replace("sinks:", "errors:\n  retry: { attempts: 1 }\nsinks:"),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("intake");
    sb.drop_json("inbox/intake", "a.json", &json!({"id": "a"}));
    sluice.expect_within(secs(30), "the file fails", || {
        sb.count("inbox/intake/.error") >= 1
    });
    std::fs::remove_file(sb.path("outbox/intake")).unwrap();
    sb.drop_json("inbox/intake", "a.json", &json!({"id": "a"}));
    sluice.expect_within(secs(30), "the retry is delivered", || {
        sb.count("outbox/intake") == 1
    });
}
