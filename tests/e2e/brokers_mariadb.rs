//! MariaDB end to end, against the server on 127.0.0.1:3306 (database `test`): inserts,
//! upserts and parameterised statements, a constraint violation to the dead letter, the
//! outbox trigger (every row delivered once and deleted after; two processes sharing one
//! outbox), and a private `mariadbd` SIGKILLed and restarted mid-flow without a loss.

use crate::support::mariadb::*;
use crate::support::*;

fn grep_lines(log: &str, what: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(what)).take(20).collect();
    lines.join("\n")
}

fn count(table: &str) -> usize {
    mariadb(&format!("SELECT count(*) FROM {table}"))
        .parse()
        .unwrap_or(0)
}

#[test]
fn mariadb_sink_inserts_upserts_runs_statements_and_dead_letters_violations() {
    if !mariadb_available() {
        return;
    }
    let t = unique_name("orders");
    mariadb(&format!(
        "CREATE TABLE {t} (id varchar(64) PRIMARY KEY, qty int NOT NULL, doc JSON, note text);
         CREATE TABLE {t}_audit (id varchar(64), qty bigint);
         CREATE TABLE {t}_log (n int AUTO_INCREMENT PRIMARY KEY, id varchar(64) NOT NULL, price decimal(30,10))"
    ));
    let sb = Sandbox::new();
    sb.write(
        "flows/maria.yaml",
        format!(
            r#"name: maria
trigger:
  file: {{ path: inbox, min_age: 50ms, check_interval: 50ms, stable_checks: 1 }}
steps:
  - to: [rows, audit, log]
sinks:
  rows:
    mysql:
      url: "{MARIADB_URL}"
      table: {t}
      columns: {{ id: id, qty: qty, doc: "{{lines: lines}}", note: "meta('file.name')" }}
      on_conflict: {{ update: [qty, doc, note] }}
  audit:
    mysql:
      url: "{MARIADB_URL}"
      sql: "INSERT INTO {t}_audit (id, qty) VALUES (?, ?)"
      args: [id, qty]
  log:
    mysql: {{ url: "{MARIADB_URL}", table: {t}_log, columns: {{ id: id, price: price }}, pool: 2 }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("maria");
    for i in 0..10 {
        sb.drop_json(
            "inbox",
            &format!("o-{i}.json"),
            &json!({ "id": format!("o-{i}"), "qty": i + 1, "lines": [{ "sku": "A", "n": i }], "price": 1.25 }),
        );
    }
    // A quote in a value is data, never SQL; a decimal keeps every digit.
    let price: serde_json::Value = serde_json::from_str("12345678901234567890.0123456789").unwrap();
    sb.drop_json(
        "inbox",
        "quote.json",
        &json!({ "id": "o'); DROP TABLE x; --", "qty": 1, "price": price }),
    );
    sluice.expect_within(secs(30), "11 rows", || count(&t) == 11);
    sluice.expect_within(secs(30), "11 log rows", || count(&format!("{t}_log")) == 11);
    assert_eq!(
        mariadb(&format!(
            "SELECT qty, JSON_VALUE(doc, '$.lines[0].n'), note FROM {t} WHERE id = 'o-3'"
        )),
        "4\t3\to-3.json"
    );
    assert_eq!(
        mariadb(&format!(
            "SELECT price FROM {t}_log WHERE id LIKE 'o''); DROP%'"
        )),
        "12345678901234567890.0123456789"
    );
    // The same id again updates the row instead of failing; the plain insert adds one.
    sb.drop_json(
        "inbox",
        "again.json",
        &json!({ "id": "o-3", "qty": 99, "price": 2 }),
    );
    sluice.expect_within(secs(30), "the upsert", || {
        mariadb(&format!("SELECT qty, note FROM {t} WHERE id = 'o-3'")) == "99\tagain.json"
    });
    sluice.expect_within(secs(30), "the inputs are done", || {
        sb.count("inbox/.done") == 12
    });
    assert_eq!(count(&t), 11);
    assert_eq!(count(&format!("{t}_log")), 12);
    assert_eq!(
        mariadb(&format!(
            "SELECT count(*), sum(qty) FROM {t}_audit WHERE id = 'o-3'"
        )),
        "2\t103"
    );
    assert_eq!(count(&format!("{t}_audit")), 12);
    assert_eq!(sb.count("dead-letter"), 0);

    // A NOT NULL violation is permanent: the dead letter, at once, with the server's words.
    sb.drop_json("inbox", "bad.json", &json!({ "id": "bad", "qty": null }));
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    let dead = sb.only_json("dead-letter");
    let message = dead["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(dead["error"]["kind"], "sink", "{dead:#}");
    assert!(
        message.contains("mysql execute: Column 'qty' cannot be null (error 1048, SQLSTATE 23000)"),
        "{dead:#}"
    );
    assert_eq!(dead["error"]["attempts"], 1, "not retried: {dead:#}");
    assert_eq!(
        mariadb(&format!("SELECT count(*) FROM {t} WHERE id = 'bad'")),
        "0"
    );
    drop(sluice);
    mariadb(&format!("DROP TABLE {t}, {t}_audit, {t}_log"));
}

#[test]
fn mariadb_config_mistakes_are_load_errors_at_their_position() {
    let sb = Sandbox::new();
    let check = |sink: &str| {
        sb.write(
            "flows/m.yaml",
            format!(
                "name: m\ntrigger:\n  file: {{ path: inbox }}\nsinks:\n  out:\n    mysql: {sink}\n"
            ),
        );
        let out = sb.cli(&["check", "flows/m.yaml"], None);
        assert_eq!(out.code, Some(1), "{}", out.all());
        out.all()
    };
    let text = check("{ table: \"a`b\", columns: { id: id } }");
    assert!(
        text.contains("m.yaml:6:") && text.contains("is not a plain SQL identifier"),
        "{text}"
    );
    let text = check("{ sql: \"INSERT INTO t VALUES (?, ?)\", args: [id] }");
    assert!(
        text.contains("m.yaml:6:") && text.contains("2 `?` placeholder(s) but 1 `args`"),
        "{text}"
    );
    let text = check("{ url: \"postgres://x\", table: t, columns: { id: id } }");
    assert!(
        text.contains("m.yaml:6:") && text.contains("invalid MariaDB URL"),
        "{text}"
    );
    let text = check("{ table: t, columns: { id: \"id ==\" } }");
    assert!(text.contains("invalid JMESPath expression"), "{text}");
}

/// An outbox of `n` events `{order, total}` (ids 1..=n) and the table its flow writes to.
fn outbox_tables(t: &str, n: usize, port: u16) {
    let run = |sql: &str| mariadb_at(port, sql).unwrap_or_else(|e| panic!("{e}\n{sql}"));
    run(&format!(
        "CREATE TABLE {t} (id bigint AUTO_INCREMENT PRIMARY KEY, payload JSON NOT NULL);
         CREATE TABLE {t}_out (id varchar(64) PRIMARY KEY, total int NOT NULL, worker varchar(16), deliveries int NOT NULL DEFAULT 1)"
    ));
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("('{{\"order\": \"e-{i}\", \"total\": {i}}}')"))
            .collect();
        run(&format!(
            "INSERT INTO {t} (payload) VALUES {}",
            values.join(", ")
        ));
    }
}

fn outbox_flow(t: &str, url: &str) -> String {
    format!(
        r#"name: outbox
trigger:
  mysql: {{ url: "{url}", table: {t}, batch: 16, poll: 100ms }}
steps:
  - to: rows
sinks:
  rows:
    mysql:
      url: "{url}"
      sql: "INSERT INTO {t}_out (id, total, worker) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE deliveries = deliveries + 1"
      args: [order, total, "'${{env:WORKER:-one}}'"]
errors:
  retry: {{ attempts: 1000, backoff: 50ms, max_backoff: 500ms }}
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
    )
}

#[test]
fn mariadb_outbox_delivers_every_row_once_and_deletes_it_after() {
    if !mariadb_available() {
        return;
    }
    let t = unique_name("outbox");
    outbox_tables(&t, 200, 3306);
    // One row whose total is no integer: the sink's data error dead-letters it, and the row
    // goes (it was handled).
    mariadb(&format!(
        "INSERT INTO {t} (payload) VALUES ('{{\"order\": \"bad\", \"total\": \"lots\"}}')"
    ));
    let sb = Sandbox::new();
    sb.write("flows/outbox.yaml", outbox_flow(&t, MARIADB_URL));
    let mut sluice = Sluice::run(&sb);
    sluice.expect_within(secs(60), "200 rows out", || {
        count(&format!("{t}_out")) == 200
    });
    sluice.expect_within(secs(30), "the outbox is empty", || count(&t) == 0);
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    let dead = sb.only_json("dead-letter");
    assert!(
        dead["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Incorrect integer value")),
        "{dead:#}"
    );
    assert_eq!(dead["meta"]["mysql.table"], t.as_str(), "{dead:#}");
    assert_eq!(dead["meta"]["mysql.id"], "201", "{dead:#}");
    assert_eq!(dead["meta"]["message_id"], format!("{t}-201"), "{dead:#}");
    // Exactly once each: no row was delivered twice.
    assert_eq!(
        mariadb(&format!("SELECT max(deliveries) FROM {t}_out")),
        "1"
    );
    assert_eq!(
        mariadb(&format!("SELECT total FROM {t}_out WHERE id = 'e-42'")),
        "42"
    );
    drop(sluice);
    mariadb(&format!("DROP TABLE {t}, {t}_out"));
}

#[test]
fn two_processes_share_one_mariadb_outbox_without_taking_a_row_twice() {
    if !mariadb_available() {
        return;
    }
    const N: usize = 1000;
    let t = unique_name("outbox2");
    outbox_tables(&t, N, 3306);
    let sb = Sandbox::new();
    sb.write("flows/outbox.yaml", outbox_flow(&t, MARIADB_URL));
    let started = std::time::Instant::now();
    let mut workers: Vec<Sluice> = ["w1", "w2"]
        .iter()
        .map(|w| Sluice::start_with_env(&sb, &["run", "--admin", "off"], &[("WORKER", w)]))
        .collect();
    workers[0].expect_within(secs(120), "every row out", || {
        count(&format!("{t}_out")) == N
    });
    workers[0].expect_within(secs(30), "the outbox is empty", || count(&t) == 0);
    let elapsed = started.elapsed();
    let split = mariadb(&format!(
        "SELECT concat(worker, '=', count(*)) FROM {t}_out GROUP BY worker ORDER BY worker"
    ));
    eprintln!(
        "two processes on one mariadb outbox: {N} rows in {elapsed:.1?} (from the start of both \
         processes), split {}",
        split.replace('\n', " ")
    );
    // SKIP LOCKED: no row was taken by both.
    let twice = mariadb(&format!(
        "SELECT group_concat(id) FROM {t}_out WHERE deliveries > 1"
    ));
    assert_eq!(
        twice,
        "NULL",
        "delivered twice: {twice}\n{}\n{}",
        grep_lines(&workers[0].log(), "WARN"),
        grep_lines(&workers[1].log(), "WARN")
    );
    assert_eq!(sb.count("dead-letter"), 0);
    for w in &mut workers {
        w.assert_running();
    }
    drop(workers);
    mariadb(&format!("DROP TABLE {t}, {t}_out"));
}

#[test]
fn a_mariadb_restart_mid_flow_loses_nothing() {
    if !private_mariadb_possible() || !program_available("mysql") {
        return;
    }
    const N: usize = 1500;
    let mut server = PrivateMysql::start();
    let port = server.port;
    let t = unique_name("restart");
    outbox_tables(&t, N, port);
    let out_count = || {
        mariadb_at(port, &format!("SELECT count(*) FROM {t}_out"))
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
    };
    let sb = Sandbox::new();
    sb.write("flows/outbox.yaml", outbox_flow(&t, &server.url()));
    let mut sluice = Sluice::run(&sb);
    sluice.expect_within(secs(60), "the first rows out", || {
        out_count().is_some_and(|c| c >= 50)
    });
    let mark = sluice.mark();
    let at_kill = out_count();
    server.kill();
    // The batch in flight waits for its outcomes: the sink retries until the server is back.
    sluice.wait_for_line_since(mark, "a write failing and retried", secs(30), |l| {
        l.contains("failed, retrying") && l.contains("mysql connection")
    });
    server.restart();
    sluice.expect_within(secs(120), "every row out", || out_count() == Some(N));
    sluice.expect_within(secs(30), "the outbox is empty", || {
        mariadb_at(port, &format!("SELECT count(*) FROM {t}")).as_deref() == Ok("0")
    });
    let duplicates =
        mariadb_at(port, &format!("SELECT sum(deliveries - 1) FROM {t}_out")).unwrap_or_default();
    eprintln!(
        "mariadb restart: {N} rows, server SIGKILLed at {} rows out; all {N} delivered, {duplicates} duplicate deliveries",
        at_kill.unwrap_or_default()
    );
    assert_eq!(sb.count("dead-letter"), 0);
    sluice.assert_running();
}

#[test]
fn the_mariadb_example_runs() {
    if !mariadb_available() {
        return;
    }
    // A database of its own, so that the example's fixed table names meet no other run.
    let db = unique_name("example");
    mariadb(&format!("CREATE DATABASE {db}"));
    let schema = std::fs::read_to_string(repo_file("examples/mariadb-outbox/schema.sql"))
        .expect("schema.sql");
    mariadb(&format!("USE {db}; {schema}"));
    let sb = Sandbox::new();
    copy_dir(&repo_file("examples/mariadb-outbox"), sb.root());
    let tested = sb.cli(&["test"], None);
    assert_eq!(tested.code, Some(0), "{}", tested.all());
    let url = format!("mysql://root@127.0.0.1:3306/{db}");
    let mut sluice = Sluice::start_with_env(&sb, &["run"], &[("MARIADB_URL", url.as_str())]);
    sluice.wait_ready("orders-in");
    sluice.wait_for_log("mysql outbox ready", secs(30));
    for name in ["o-1.json", "o-2.json"] {
        let body = std::fs::read(sb.path(&format!("inputs/{name}"))).expect("input");
        sb.write_atomic(&format!("inbox/orders/{name}"), body);
    }
    sluice.expect_within(secs(30), "two events out", || {
        sb.count("outbox/events") == 2
    });
    let sql = |q: &str| mariadb(&format!("USE {db}; {q}"));
    sluice.expect_within(secs(30), "the outbox is empty", || {
        sql("SELECT count(*) FROM shop_outbox") == "0"
    });
    assert_eq!(
        sql("SELECT id, total_cents FROM shop_orders ORDER BY id"),
        "o-1\t1299\no-2\t60"
    );
    let names = sb.names("outbox/events");
    let o1 = names
        .iter()
        .find(|n| n.starts_with("o-1-"))
        .unwrap_or_else(|| panic!("{names:?}"));
    let event = sb.read_json(&format!("outbox/events/{o1}"));
    assert_eq!(event["order"], "o-1", "{event}");
    assert_eq!(event["total_cents"], 1299, "{event}");
    assert_eq!(event["table"], "shop_outbox", "{event}");
    drop(sluice);
    mariadb(&format!("DROP DATABASE {db}"));
}
