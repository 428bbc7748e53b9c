//! The README's five-minute walkthrough, end to end, against the real binary.
//!
//! Copies the repository's `flows/`, `schemas/` and `scripts/` into a temporary folder, starts
//! `sluice run` there, drops the sample inputs from `examples/inputs/` into the watched folders and
//! checks that exactly the outputs the README describes appear. Every wait is bounded; the process
//! is killed by PID when the test ends, however it ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::copy_dir;
use serde_json::Value;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(30);
/// After the expected outputs are there, how long to wait for unexpected extra ones.
const SETTLE: Duration = Duration::from_millis(1500);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The running `sluice run`; killed with SIGKILL (by PID) when dropped.
struct Sluice {
    child: Child,
    log: PathBuf,
}

impl Sluice {
    fn start(dir: &Path) -> Sluice {
        let log = dir.join("sluice.log");
        let stderr = fs::File::create(&log).unwrap();
        let stdout = fs::File::create(dir.join("sluice.stdout")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("run")
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start the sluice binary");
        Sluice { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) when the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("sluice exited early with {status}; log:\n{}", self.log());
        }
    }

    /// Waits until `done` holds, at most `timeout`; panics with `what` and the log otherwise.
    fn wait_for(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&Sluice) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return;
            }
            self.assert_running();
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with the PID of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Names of the regular, non-hidden files in `dir` (empty when `dir` does not exist), sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {v}"))
}

fn string<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {v}"))
}

#[test]
fn readme_walkthrough_produces_the_documented_outputs() {
    // It runs without a `Sandbox` (the walkthrough is self-contained) but takes its turn.
    let _pass = crate::support::gate::enter();
    let root = repo_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for folder in ["flows", "schemas", "scripts"] {
        copy_dir(&root.join(folder), &dir.join(folder));
    }

    let mut sluice = Sluice::start(dir);
    sluice.wait_for(
        "`flow ready` for order-intake and csv-customers",
        STARTUP_TIMEOUT,
        |s| {
            let log = s.log();
            ["order-intake", "csv-customers"].iter().all(|flow| {
                log.lines()
                    .any(|line| line.contains("flow ready") && line.contains(flow))
            })
        },
    );

    // The walkthrough: cp examples/inputs/orders/*.json inbox/orders/ (and the CSV).
    let inputs = root.join("examples/inputs");
    let orders_inbox = dir.join("inbox/orders");
    let customers_inbox = dir.join("inbox/customers");
    fs::create_dir_all(&orders_inbox).unwrap();
    fs::create_dir_all(&customers_inbox).unwrap();
    for name in files(&inputs.join("orders")) {
        fs::copy(inputs.join("orders").join(&name), orders_inbox.join(&name)).unwrap();
    }
    fs::copy(
        inputs.join("customers/customers.csv"),
        customers_inbox.join("customers.csv"),
    )
    .unwrap();

    let expected: Vec<(PathBuf, Vec<&str>)> = vec![
        (
            dir.join("outbox/express"),
            vec!["o-1001.json", "o-1003.json"],
        ),
        (dir.join("outbox/standard"), vec!["o-1002.json"]),
        (
            orders_inbox.join(".done"),
            vec!["order-1001.json", "order-1002.json", "order-1003.json"],
        ),
        (
            orders_inbox.join(".rejected"),
            vec!["order-1004.json", "order-1004.json.error.json"],
        ),
        (
            dir.join("outbox/customers"),
            vec!["c-100.json", "c-101.json", "c-103.json"],
        ),
        (customers_inbox.join(".done"), vec!["customers.csv"]),
    ];
    let dead_letters = dir.join("dead-letter/order-intake");
    sluice.wait_for(
        "the outputs described in the README",
        OUTPUT_TIMEOUT,
        |_| {
            expected.iter().all(|(folder, names)| {
                let present = files(folder);
                names.iter().all(|n| present.iter().any(|p| p == n))
            }) && !files(&dead_letters).is_empty()
        },
    );

    // Exactly those outputs, and nothing else, once things have settled.
    sleep(SETTLE);
    sluice.assert_running();
    for (folder, names) in &expected {
        assert_eq!(&files(folder), names, "files in {}", folder.display());
    }
    assert_eq!(
        files(&orders_inbox),
        Vec::<String>::new(),
        "left in inbox/orders"
    );
    assert_eq!(
        files(&customers_inbox),
        Vec::<String>::new(),
        "left in inbox/customers"
    );
    assert_eq!(files(&orders_inbox.join(".inflight")), Vec::<String>::new());
    assert_eq!(files(&orders_inbox.join(".error")), Vec::<String>::new());
    assert_eq!(
        files(&customers_inbox.join(".rejected")),
        Vec::<String>::new()
    );
    assert_eq!(files(&customers_inbox.join(".error")), Vec::<String>::new());
    assert_eq!(
        files(&dir.join("dead-letter/csv-customers")),
        Vec::<String>::new()
    );
    let dead = files(&dead_letters);
    assert_eq!(dead.len(), 1, "dead letters: {dead:?}");

    // Priced orders.
    let o1001 = read_json(&dir.join("outbox/express/o-1001.json"));
    assert_eq!(string(&o1001, "/order_id"), "o-1001");
    assert_eq!(string(&o1001, "/priority"), "high");
    assert_eq!(string(&o1001, "/customer/tier"), "gold");
    assert_eq!(string(&o1001, "/currency"), "EUR");
    assert_eq!(number(&o1001, "/total"), 86.25);
    assert_eq!(number(&o1001, "/lines/0/total"), 79.0);
    assert_eq!(number(&o1001, "/lines/1/total"), 7.25);
    assert!(!string(&o1001, "/received_at").is_empty());
    assert!(
        o1001.get("id").is_none(),
        "id is renamed to order_id: {o1001}"
    );

    let o1002 = read_json(&dir.join("outbox/standard/o-1002.json"));
    assert_eq!(string(&o1002, "/order_id"), "o-1002");
    assert_eq!(string(&o1002, "/priority"), "normal");
    assert_eq!(number(&o1002, "/total"), 20.75);

    let o1003 = read_json(&dir.join("outbox/express/o-1003.json"));
    assert_eq!(string(&o1003, "/priority"), "high");
    assert_eq!(string(&o1003, "/customer/tier"), "silver");
    assert_eq!(number(&o1003, "/total"), 1310.5);
    assert!(
        o1003.get("note").is_none(),
        "the transform drops `note`: {o1003}"
    );

    // The rejected order: the original file, untouched, and its sidecar.
    assert_eq!(
        fs::read(orders_inbox.join(".rejected/order-1004.json")).unwrap(),
        fs::read(inputs.join("orders/order-1004.json")).unwrap()
    );
    let sidecar = read_json(&orders_inbox.join(".rejected/order-1004.json.error.json"));
    assert_eq!(string(&sidecar, "/flow"), "order-intake");
    assert_eq!(string(&sidecar, "/kind"), "contract");
    assert_eq!(number(&sidecar, "/attempts"), 1.0);
    assert!(!string(&sidecar, "/flow_version").is_empty());
    assert!(!string(&sidecar, "/step").is_empty());
    assert!(!string(&sidecar, "/message").is_empty());
    assert!(!string(&sidecar, "/time").is_empty());
    assert!(
        string(&sidecar, "/file").contains("order-1004.json"),
        "sidecar file: {sidecar}"
    );
    let violations = sidecar["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("violations: {sidecar}"));
    let mut pointers: Vec<&str> = violations.iter().map(|v| string(v, "/pointer")).collect();
    pointers.sort_unstable();
    assert_eq!(
        pointers,
        ["/currency", "/lines/0/qty"],
        "sidecar: {sidecar}"
    );
    for v in violations {
        assert!(!string(v, "/message").is_empty(), "violation: {v}");
    }

    // The dead letter keeps the original message and an error envelope.
    let dead = read_json(&dead_letters.join(&dead[0]));
    assert_eq!(string(&dead, "/message/id"), "o-1004");
    assert_eq!(string(&dead, "/message/currency"), "euro");
    assert_eq!(string(&dead, "/error/kind"), "contract");
    assert_eq!(string(&dead, "/error/flow"), "order-intake");

    // Customers: trimmed, normalised, the row without an e-mail address dropped.
    let c100 = read_json(&dir.join("outbox/customers/c-100.json"));
    assert_eq!(string(&c100, "/name"), "Ada Lovelace");
    assert_eq!(string(&c100, "/email"), "ada@example.com");
    assert_eq!(string(&c100, "/country"), "GB");
    assert_eq!(string(&c100, "/source_file"), "customers.csv");
    assert_eq!(string(&c100, "/source_row"), "1");
    let c101 = read_json(&dir.join("outbox/customers/c-101.json"));
    assert_eq!(string(&c101, "/country"), "US");
    let c103 = read_json(&dir.join("outbox/customers/c-103.json"));
    assert_eq!(string(&c103, "/email"), "hedy@example.at");
    assert_eq!(string(&c103, "/country"), "AT");
    assert_eq!(string(&c103, "/source_row"), "4");
}
