//! Dropping files into a watched folder: many at once, and one written slowly.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::thread;
use std::time::Instant;

use crate::support::*;

/// The trigger keeps its defaults here: the point is what a user gets out of the box.
const BULK_FLOW: &str = r#"name: bulk
concurrency: 4
trigger:
  file:
    path: inbox/bulk
    glob: "*.json"
steps:
  - transform: "{id: id, n: n, source: meta('file.name')}"
  - to: out
sinks:
  out:
    file: { path: outbox/bulk, name: "{{id}}.json" }
"#;

#[test]
fn ten_thousand_files_dropped_at_once_are_all_delivered() {
    const N: usize = 10_000;
    let sb = Sandbox::new();
    sb.write("flows/bulk.yaml", BULK_FLOW);
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("bulk");

    let started = Instant::now();
    let mut expected = BTreeSet::new();
    for i in 0..N {
        let id = format!("f-{i:05}");
        sb.drop_json(
            "inbox/bulk",
            &format!("{id}.json"),
            &json!({ "id": id, "n": i }),
        );
        expected.insert(format!("{id}.json"));
    }
    eprintln!("wrote {N} files in {:?}", started.elapsed());

    let outbox = sb.path("outbox/bulk");
    let done = sb.path("inbox/bulk/.done");
    sluice.expect_within(
        secs(180),
        &format!("{N} outputs and {N} files in .done/"),
        || count_files(&outbox) >= N && count_files(&done) >= N,
    );
    eprintln!("all {N} delivered after {:?}", started.elapsed());

    assert_eq!(sb.count("inbox/bulk"), 0, "files left in the inbox");
    assert_eq!(
        sb.count("inbox/bulk/.inflight"),
        0,
        "files left in .inflight/"
    );
    assert_eq!(
        sb.count("inbox/bulk/.error"),
        0,
        "files in .error/:\n{}",
        sluice.log_tail(40)
    );
    assert_eq!(sb.count("inbox/bulk/.rejected"), 0, "files in .rejected/");
    assert_eq!(
        sb.names("inbox/bulk/.done"),
        expected,
        ".done/ holds exactly the inputs"
    );
    assert_eq!(
        sb.names("outbox/bulk"),
        expected,
        "one output per input, no duplicates"
    );

    for i in 0..N {
        let id = format!("f-{i:05}");
        let out = read_json(&outbox.join(format!("{id}.json")));
        assert_eq!(
            out,
            json!({ "id": id, "n": i, "source": format!("{id}.json") }),
            "content of output {id}"
        );
    }
    sluice.assert_running();
}

const SLOW_FLOW: &str = r#"name: slow
trigger:
  file:
    path: inbox/slow
    glob: "*.json"
steps:
  - to: out
sinks:
  out:
    file: { path: outbox/slow, name: "{{id}}.json" }
"#;

#[test]
fn a_file_written_slowly_is_read_only_when_complete() {
    let sb = Sandbox::new();
    sb.write("flows/slow.yaml", SLOW_FLOW);
    std::fs::create_dir_all(sb.path("inbox/slow")).unwrap();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("slow");

    let items: Vec<serde_json::Value> = (0..200)
        .map(|i| json!({ "line": i, "sku": format!("SKU-{i:04}"), "qty": i % 7 + 1 }))
        .collect();
    let value = json!({ "id": "slow-1", "items": items, "note": "written in twenty chunks" });
    let text = serde_json::to_string_pretty(&value).unwrap();
    let bytes = text.as_bytes();

    // 20 chunks, 100 ms apart, straight into the watched folder under the final name.
    let path = sb.path("inbox/slow/slow-1.json");
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .unwrap();
    let chunk = bytes.len().div_ceil(20);
    let started = Instant::now();
    for piece in bytes.chunks(chunk) {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        thread::sleep(millis(100));
        // While it is being written the file must stay where it is.
        if started.elapsed() < millis(1900) {
            assert!(
                path.exists(),
                "the file was taken after {:?}, while still being written\n{}",
                started.elapsed(),
                sluice.log_tail(20)
            );
        }
    }
    drop(file);
    eprintln!("wrote {} bytes in {:?}", bytes.len(), started.elapsed());

    let out = sluice.wait_json(&sb, "outbox/slow/slow-1.json", secs(20));
    assert_eq!(out, value, "the output is the complete file");
    sluice.expect_within(secs(10), "slow-1.json in .done/", || {
        sb.exists("inbox/slow/.done/slow-1.json")
    });
    assert_eq!(
        sb.count("inbox/slow/.error"),
        0,
        "nothing in .error/:\n{}",
        sluice.log_tail(20)
    );
    assert_eq!(sb.count("inbox/slow/.rejected"), 0, "nothing in .rejected/");
    assert_eq!(
        sb.names("outbox/slow"),
        BTreeSet::from(["slow-1.json".to_owned()])
    );
}
