//! The file connector keeps its promises at the edges: a malformed csv row or ndjson line fails
//! alone, a full disk is waited out in-process, a killed run leaves nothing behind, long names
//! and unsyncable folders fail honestly, and a UTF-8 byte order mark is not content.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::support::*;
use serde_json::Value;

/// A flow reading `format` files from `inbox/in` and writing each record to `outbox/`.
fn rows_flow(format: &str, glob: &str) -> String {
    format!(
        r#"name: rows
trigger:
  file:
    path: inbox/in
    glob: "{glob}"
    format: {format}
    {FAST_TRIGGER}
steps:
  - to: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{id}}}}.json" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
    )
}

/// The one line of the log for flow `rows` that contains `what`.
fn logged(sluice: &Sluice, what: &str) -> String {
    let log = sluice.log();
    assert_logged_once(&log, what, "rows");
    log.lines()
        .find(|l| l.contains(what) && has_flow(l, "rows"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_malformed_csv_row_fails_alone_and_the_file_says_what_happened() {
    let sb = Sandbox::new();
    sb.write("flows/rows.yaml", rows_flow("csv", "*.csv"));
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("rows");

    // Row 2 (line 3) has a field too many; rows 1 and 3 are fine.
    sb.write_atomic(
        "inbox/in/people.csv",
        "id,name\nada,Ada\nbob,Bob,surplus\ncy,Cy\n",
    );
    sluice.expect_within(secs(20), "people.csv in .partial/ with its sidecar", || {
        sb.exists("inbox/in/.partial/people.csv.error.json")
    });
    assert_eq!(
        sb.read_json("outbox/ada.json"),
        json!({"id": "ada", "name": "Ada"})
    );
    assert_eq!(
        sb.read_json("outbox/cy.json"),
        json!({"id": "cy", "name": "Cy"})
    );
    for folder in [".error", ".rejected", ".done", ".inflight"] {
        assert_eq!(
            sb.count(&format!("inbox/in/{folder}")),
            0,
            "nothing in {folder}/"
        );
    }

    // The dead letter keeps the row exactly as it is in the file, and where it is.
    let dead = undecodable_dead_letter(&sb, "bob,Bob,surplus", "csv row 2 (line 3)");
    assert_eq!(dead["meta"]["file.line"], "2", "{dead:#}");
    assert_eq!(dead["meta"]["file.source_line"], "3", "{dead:#}");
    assert_eq!(dead["meta"]["file.name"], "people.csv", "{dead:#}");
    assert!(
        dead["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 fields where the header has 2")),
        "{dead:#}"
    );

    // The sidecar: the counts and every failed record, with its line.
    let side = sb.read_json("inbox/in/.partial/people.csv.error.json");
    assert_eq!(
        side["records"],
        json!({"total": 3, "succeeded": 2, "failed": 1, "dead_lettered": 1}),
        "{side:#}"
    );
    assert_eq!(side["file"], "people.csv");
    assert_eq!(side["kind"], "trigger");
    let failed = side["failed_records"].as_array().expect("failed_records");
    assert_eq!(failed.len(), 1, "{side:#}");
    assert_eq!(failed[0]["line"], 2, "{side:#}");
    assert_eq!(failed[0]["source_line"], 3, "{side:#}");
    assert_eq!(failed[0]["kind"], "trigger", "{side:#}");
    assert_eq!(failed[0]["dead_lettered"], true, "{side:#}");
    assert_eq!(
        failed[0]["message_id"], dead["error"]["message_id"],
        "{side:#}"
    );

    let line = logged(&sluice, "file partly processed");
    assert!(
        line.contains("1 of 3 records failed") && line.contains("2 succeeded"),
        "{line}"
    );
    assert!(line.contains("do not drop the file again"), "{line}");
    assert!(
        !sluice.log().contains("file not processed"),
        "{}",
        sluice.log_tail(20)
    );

    // A file whose rows all fail goes to .error/, one whose rows all succeed to .done/, and
    // each log line says so.
    sb.write_atomic("inbox/in/bad.csv", "id,name\nx\ny,z,w\n");
    sb.write_atomic("inbox/in/good.csv", "id,name\ndee,Dee\n");
    sluice.expect_within(
        secs(20),
        "bad.csv in .error/ and good.csv in .done/",
        || sb.exists("inbox/in/.error/bad.csv.error.json") && sb.exists("inbox/in/.done/good.csv"),
    );
    let side = sb.read_json("inbox/in/.error/bad.csv.error.json");
    assert_eq!(side["records"]["failed"], 2, "{side:#}");
    assert_eq!(side["records"]["succeeded"], 0, "{side:#}");
    assert!(
        logged(&sluice, "file not processed").contains("all 2 records failed"),
        "{}",
        sluice.log_tail(20)
    );
    assert!(
        logged(&sluice, "file done").contains("all 1 records succeeded (1 delivered, 0 filtered)"),
        "{}",
        sluice.log_tail(20)
    );
    assert_eq!(sb.read_json("outbox/dee.json")["name"], "Dee");
    sluice.assert_running();
}

#[test]
fn a_malformed_ndjson_line_fails_alone_and_keeps_its_bytes() {
    let sb = Sandbox::new();
    sb.write("flows/rows.yaml", rows_flow("ndjson", "*.ndjson"));
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("rows");

    let mut text = b"{\"id\":\"a\"}\n{\"id\": broken\n\n".to_vec();
    text.extend_from_slice(b"{\"id\":\"\xff\"}\n{\"id\":\"e\"}\n");
    sb.write_atomic("inbox/in/batch.ndjson", &text);
    sluice.expect_within(secs(20), "batch.ndjson in .partial/", || {
        sb.exists("inbox/in/.partial/batch.ndjson.error.json")
    });
    assert_eq!(sb.read_json("outbox/a.json"), json!({"id": "a"}));
    assert_eq!(sb.read_json("outbox/e.json"), json!({"id": "e"}));

    let side = sb.read_json("inbox/in/.partial/batch.ndjson.error.json");
    assert_eq!(
        side["records"],
        json!({"total": 4, "succeeded": 2, "failed": 2, "dead_lettered": 2}),
        "{side:#}"
    );
    let lines: Vec<&Value> = side["failed_records"]
        .as_array()
        .expect("failed_records")
        .iter()
        .map(|r| &r["line"])
        .collect();
    assert_eq!(lines, [&json!(2), &json!(4)], "{side:#}");

    // Each dead letter holds its line as it is: text as a string, bytes that are not UTF-8
    // in base64 (and says so).
    let mut dead: Vec<Value> = sb
        .names("dead-letter")
        .iter()
        .map(|n| sb.read_json(&format!("dead-letter/{n}")))
        .collect();
    dead.sort_by_key(|d| {
        d["meta"]["file.line"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    assert_eq!(dead.len(), 2, "{dead:#?}");
    assert_eq!(dead[0]["message"], "{\"id\": broken", "{:#}", dead[0]);
    assert_eq!(dead[0]["meta"]["file.line"], "2");
    assert!(
        dead[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("line 2 column")),
        "{:#}",
        dead[0]
    );
    assert_eq!(dead[1]["meta"]["file.line"], "4");
    assert_eq!(dead[1]["meta"]["sluice.body_encoding"], "base64");
    assert_eq!(dead[1]["message"], "eyJpZCI6Iv8ifQ==", "{:#}", dead[1]);

    let line = logged(&sluice, "file partly processed");
    assert!(line.contains("2 of 4 records failed"), "{line}");
    sluice.assert_running();
}

/// A small tmpfs mounted over a sandbox folder, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one, or says why it cannot (not root, no mount).
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the sluice process may still be going away.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_full_inbox_disk_is_waited_out_in_process_without_repeating_dead_letters() {
    let sb = Sandbox::new();
    let disk = match Tmpfs::mount(&sb.path("inbox"), "256k") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipping: this test mounts a small tmpfs to fill it (needs root): {why}");
            return;
        }
    };
    sb.write(
        "schemas/order.v1.json",
        r#"{"type": "object", "required": ["id"]}"#,
    );
    sb.write(
        "flows/rows.yaml",
        format!(
            r#"name: rows
trigger:
  file:
    path: inbox/in
    glob: "*.json"
    {FAST_TRIGGER}
contract:
  input: order.v1
steps:
  - to: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{id}}}}.json" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("rows");

    // The input is written while there is room, then the disk is filled, then the input
    // appears under its real name (a rename needs no room).
    sb.write("inbox/in/.staging", r#"{"no_id": 1}"#);
    fill(&sb.path("inbox/filler"));
    std::fs::rename(sb.path("inbox/in/.staging"), sb.path("inbox/in/bad.json")).unwrap();

    // The message is dead-lettered (another disk); its sidecar cannot be written.
    let complaint = "cannot move the finished file out of .inflight/";
    sluice.wait_for_line(complaint, secs(20), |l| l.contains(complaint));
    assert!(sb.exists("inbox/in/.inflight/bad.json"));
    assert_eq!(sb.count("dead-letter"), 1);
    assert!(
        sluice.log().contains("No space left on device"),
        "{}",
        sluice.log_tail(20)
    );

    // Space comes back: the same process finishes the file.
    std::fs::remove_file(sb.path("inbox/filler")).unwrap();
    sluice.expect_within(secs(20), "bad.json in .rejected/ with its sidecar", || {
        sb.exists("inbox/in/.rejected/bad.json")
            && sb.exists("inbox/in/.rejected/bad.json.error.json")
    });
    assert_eq!(sb.count("inbox/in/.inflight"), 0);
    assert_eq!(
        sb.read_json("inbox/in/.rejected/bad.json.error.json")["kind"],
        "contract"
    );
    logged(&sluice, "moved the finished file after");
    let leftovers: Vec<_> = std::fs::read_dir(sb.path("inbox/in/.rejected"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "half-written sidecars: {leftovers:?}");

    // A restart has nothing to redo: a new file goes through and the dead letter is alone.
    sluice.kill();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("rows");
    sb.drop_json("inbox/in", "good.json", &json!({"id": "g"}));
    sluice.wait_json(&sb, "outbox/g.json", secs(20));
    assert_eq!(sb.count("dead-letter"), 1, "no second dead letter");
    assert!(
        !sluice.log().contains("recovering files left in .inflight/"),
        "{}",
        sluice.log_tail(20)
    );
    drop(sluice);
    drop(disk);
}

/// A name in the form sluice gives its temporary files, made `ago_ms` before now.
fn stale_temp_name(name: &str, ago_ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // A UUIDv7: 48 bits of Unix milliseconds, version 7, variant 10, random bits.
    format!(".{name}.tmp-{:012x}7abc8def0123456789ab", now - ago_ms)
}

#[test]
fn temporary_files_left_by_a_killed_run_are_removed_at_start() {
    let sb = Sandbox::new();
    sb.write(
        "flows/rows.yaml",
        format!(
            r#"name: rows
trigger:
  file:
    path: inbox/in
    glob: "*.json"
    {FAST_TRIGGER}
steps:
  - to: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{id}}}}.json" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    // What a kill in the middle of writes leaves: empty temporary files of sluice's own.
    let ours = [
        format!("outbox/{}", stale_temp_name("o-1.json", 60_000)),
        format!("dead-letter/{}", stale_temp_name("0191.json", 5_000)),
        format!(
            "inbox/in/.rejected/{}",
            stale_temp_name("x.json.error.json", 1_000)
        ),
    ];
    // Names that are not sluice's: kept.
    let theirs = [
        "outbox/.notes.tmp-draft".to_owned(),
        "outbox/report.tmp".to_owned(),
        "outbox/.o-2.json.tmp-0123456789abcdef0123456789abcdef".to_owned(),
    ];
    for rel in ours.iter().chain(&theirs) {
        sb.write(rel, "");
    }
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("rows");
    // The sink folders are cleaned before their first write: one delivery, one dead letter
    // (a payload without `id` cannot be named).
    sb.drop_json("inbox/in", "a.json", &json!({"id": "a"}));
    sb.drop_json("inbox/in", "b.json", &json!({"no_id": true}));
    sluice.wait_json(&sb, "outbox/a.json", secs(20));
    sluice.expect_within(secs(20), "b.json dead-lettered", || {
        sb.count("dead-letter") == 1 && sb.exists("inbox/in/.error/b.json")
    });
    for rel in &ours {
        assert!(!sb.exists(rel), "{rel} was left behind");
    }
    for rel in &theirs {
        assert!(sb.exists(rel), "{rel} is not sluice's and must stay");
    }
    assert!(
        sluice
            .log()
            .contains("removed temporary files left by an earlier run"),
        "{}",
        sluice.log_tail(20)
    );
    sluice.assert_running();
}

#[test]
fn a_long_sink_name_is_written_and_a_name_too_long_for_the_filesystem_fails_at_once() {
    let sb = Sandbox::new();
    // A sink folder whose path is longer than Linux allows (PATH_MAX, 4096 bytes).
    let deep = vec!["d".repeat(250); 17].join("/");
    sb.write(
        "flows/rows.yaml",
        format!(
            r#"name: rows
trigger:
  file:
    path: inbox/in
    glob: "*.json"
    {FAST_TRIGGER}
steps:
  - route:
      - when: "deep"
        to: deep
      - else: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{name}}}}" }}
  deep:
    file: {{ path: "{deep}", name: "{{{{name}}}}" }}
errors:
  retry: {{ attempts: 3, backoff: 10ms }}
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("rows");

    // 250 and 255 bytes: names a filesystem takes, so they are written.
    let long = format!("{}.json", "n".repeat(245));
    let longest = format!("{}.json", "é".repeat(125));
    assert_eq!((long.len(), longest.len()), (250, 255));
    sb.drop_json("inbox/in", "a.json", &json!({"name": long, "deep": false}));
    sb.drop_json(
        "inbox/in",
        "b.json",
        &json!({"name": longest, "deep": false}),
    );
    sluice.wait_json(&sb, &format!("outbox/{long}"), secs(20));
    sluice.wait_json(&sb, &format!("outbox/{longest}"), secs(20));

    // A path the system refuses as too long: permanent, one attempt, and it says why.
    sb.drop_json(
        "inbox/in",
        "c.json",
        &json!({"name": "c.json", "deep": true}),
    );
    sluice.expect_within(secs(20), "c.json in .error/", || {
        sb.exists("inbox/in/.error/c.json.error.json")
    });
    let dead = sb.only_json("dead-letter");
    assert_eq!(dead["error"]["kind"], "sink", "{dead:#}");
    assert_eq!(dead["error"]["attempts"], 1, "not retried: {dead:#}");
    let message = dead["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("file name too long") && message.contains("shorten the sink's"),
        "{message}"
    );
    sluice.assert_running();
}

/// The user the fsync test runs sluice as when the tests run as root (root may open any
/// folder, so the folder's permissions would not stop it).
const NOBODY: u32 = 65534;

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&entry.path(), uid);
        }
    }
}

#[test]
fn a_folder_that_cannot_be_synced_fails_the_write() {
    let sb = Sandbox::new();
    sb.write(
        "flows/rows.yaml",
        format!(
            r#"name: rows
trigger:
  file:
    path: inbox/in
    glob: "*.json"
    {FAST_TRIGGER}
steps:
  - to: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{id}}}}.json", fsync: true }}
errors:
  retry: {{ attempts: 2, backoff: 10ms }}
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    // Write and search permission, no read: files can be created in the folder, but the
    // folder itself cannot be opened, so it cannot be synced.
    std::fs::create_dir_all(sb.path("outbox")).unwrap();
    std::fs::set_permissions(sb.path("outbox"), std::fs::Permissions::from_mode(0o300)).unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        chown_tree(sb.root(), NOBODY);
    }
    let mut sluice = Sluice::start_configured(&sb, &["run"], &[], |command| {
        if root {
            use std::os::unix::process::CommandExt;
            command.uid(NOBODY).gid(NOBODY);
        }
    });
    sluice.wait_ready("rows");
    sb.drop_json("inbox/in", "a.json", &json!({"id": "a"}));
    sluice.expect_within(secs(20), "a.json in .error/", || {
        sb.exists("inbox/in/.error/a.json.error.json")
    });
    let side = sb.read_json("inbox/in/.error/a.json.error.json");
    assert_eq!(side["kind"], "sink", "{side:#}");
    assert_eq!(side["attempts"], 2, "{side:#}");
    let message = side["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot fsync the folder") && message.contains("not confirmed"),
        "{message}"
    );
    assert!(
        !sb.exists("inbox/in/.done/a.json"),
        "an unsynced write is not confirmed"
    );
    sluice.assert_running();
}

#[test]
fn files_with_a_byte_order_mark_are_read_without_it() {
    let sb = Sandbox::new();
    for (format, glob) in [
        ("json", "*.json"),
        ("ndjson", "*.ndjson"),
        ("csv", "*.csv"),
        ("text", "*.txt"),
    ] {
        sb.write(
            &format!("flows/{format}.yaml"),
            format!(
                r#"name: bom-{format}
trigger:
  file:
    path: inbox/{format}
    glob: "{glob}"
    format: {format}
    {FAST_TRIGGER}
steps:
  - to: out
sinks:
  out:
    file: {{ path: outbox/{format}, name: "{{{{meta('file.name')}}}}.out", format: json }}
"#
            ),
        );
    }
    let mut sluice = Sluice::run(&sb);
    for format in ["json", "ndjson", "csv", "text"] {
        sluice.wait_ready(&format!("bom-{format}"));
    }
    let bom = "\u{feff}";
    sb.write_atomic("inbox/json/a.json", format!("{bom}{{\"id\": \"j\"}}"));
    sb.write_atomic("inbox/ndjson/a.ndjson", format!("{bom}{{\"id\": \"n\"}}\n"));
    sb.write_atomic("inbox/csv/a.csv", format!("{bom}id,name\nc,Cee\n"));
    sb.write_atomic("inbox/text/a.txt", format!("{bom}hello"));
    let expected = [
        ("json", "a.json", json!({"id": "j"})),
        ("ndjson", "a.ndjson", json!({"id": "n"})),
        ("csv", "a.csv", json!({"id": "c", "name": "Cee"})),
        ("text", "a.txt", json!("hello")),
    ];
    for (format, name, payload) in expected {
        let out = sluice.wait_json(&sb, &format!("outbox/{format}/{name}.out"), secs(20));
        assert_eq!(out, payload, "{format}");
        sluice.expect_within(secs(10), &format!("{name} in .done/"), || {
            sb.exists(&format!("inbox/{format}/.done/{name}"))
        });
        assert_eq!(sb.count(&format!("inbox/{format}/.error")), 0, "{format}");
    }
    sluice.assert_running();
}
