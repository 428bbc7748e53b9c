//! PostgreSQL end to end, against the server on 127.0.0.1:5432 (database `test`): upserts and
//! parameterised statements, dead letters, a transient failure retried, and the outbox
//! trigger.

use crate::support::*;

#[test]
fn postgres_sink_upserts_rows_and_dead_letters_contract_violations() {
    if !postgres_available() {
        return;
    }
    let t = unique_name("orders");
    psql(&format!(
        "CREATE TABLE {t} (id text PRIMARY KEY, qty int NOT NULL, doc jsonb, note text);
         CREATE TABLE {t}_audit (id text, qty bigint)"
    ));
    let sb = Sandbox::new();
    sb.write(
        "schemas/order.v1.json",
        r#"{"type":"object","required":["id","qty"],"properties":{"qty":{"type":"integer","minimum":1}}}"#,
    );
    sb.write(
        "flows/pg.yaml",
        format!(
            r#"name: pg
trigger:
  file: {{ path: inbox, min_age: 50ms, check_interval: 50ms, stable_checks: 1 }}
contract: {{ input: order.v1 }}
steps:
  - to: [rows, audit]
sinks:
  rows:
    postgres:
      url: "{POSTGRES_URL}"
      table: {t}
      columns: {{ id: id, qty: qty, doc: "{{lines: lines}}", note: "meta('file.name')" }}
      on_conflict: {{ key: [id], update: [qty, doc, note] }}
  audit:
    postgres:
      url: "{POSTGRES_URL}"
      sql: "INSERT INTO {t}_audit (id, qty) VALUES ($1, $2)"
      args: [id, qty]
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("pg");
    for i in 0..10 {
        sb.drop_json(
            "inbox",
            &format!("o-{i}.json"),
            &json!({ "id": format!("o-{i}"), "qty": i + 1, "lines": [{ "sku": "A", "n": i }] }),
        );
    }
    // A quote in a value is data, never SQL.
    sb.drop_json(
        "inbox",
        "quote.json",
        &json!({ "id": "o'); DROP TABLE x; --", "qty": 1 }),
    );
    sb.drop_json("inbox", "bad.json", &json!({ "id": "bad", "qty": 0 }));
    sluice.expect_within(secs(30), "11 rows", || {
        psql(&format!("SELECT count(*) FROM {t}")) == "11"
    });
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    assert_eq!(
        psql(&format!(
            "SELECT qty, doc->'lines'->0->>'n', note FROM {t} WHERE id = 'o-3'"
        )),
        "4|3|o-3.json"
    );
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {t} WHERE id LIKE 'o''); DROP%'"
        )),
        "1"
    );
    // The same id again updates the row instead of failing.
    sb.drop_json("inbox", "again.json", &json!({ "id": "o-3", "qty": 99 }));
    sluice.expect_within(secs(30), "the upsert", || {
        psql(&format!("SELECT qty FROM {t} WHERE id = 'o-3'")) == "99"
    });
    sluice.expect_within(secs(30), "the inputs are done", || {
        sb.count("inbox/.done") == 12
    });
    assert_eq!(
        psql(&format!(
            "SELECT count(*), sum(qty) FROM {t}_audit WHERE id = 'o-3'"
        )),
        "2|103"
    );
    assert_eq!(psql(&format!("SELECT count(*) FROM {t}_audit")), "12");
    drop(sluice);
    psql(&format!("DROP TABLE {t}; DROP TABLE {t}_audit"));
}

#[test]
fn postgres_transient_failure_is_retried_then_succeeds() {
    if !postgres_available() {
        return;
    }
    let t = unique_name("busy");
    // While the flag table has a row, every insert fails with a serialization failure (40001),
    // which is transient.
    psql(&format!(
        "CREATE TABLE {t}_flag (x int); INSERT INTO {t}_flag VALUES (1);
         CREATE TABLE {t} (id text PRIMARY KEY);
         CREATE FUNCTION {t}_f() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF EXISTS (SELECT 1 FROM {t}_flag) THEN RAISE EXCEPTION 'busy' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER {t}_t BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_f();"
    ));
    let sb = Sandbox::new();
    sb.write(
        "flows/busy.yaml",
        format!(
            r#"name: busy
trigger:
  file: {{ path: inbox, min_age: 50ms, check_interval: 50ms, stable_checks: 1 }}
steps:
  - to: rows
sinks:
  rows:
    postgres: {{ url: "{POSTGRES_URL}", table: {t}, columns: {{ id: id }} }}
errors:
  retry: {{ attempts: 100, backoff: 200ms, max_backoff: 200ms }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("busy");
    sb.drop_json("inbox", "a.json", &json!({ "id": "a" }));
    sluice.wait_for_log("failed, retrying in", secs(30));
    psql(&format!("DELETE FROM {t}_flag"));
    sluice.expect_within(secs(30), "the row after the retry", || {
        psql(&format!("SELECT count(*) FROM {t}")) == "1"
    });
    drop(sluice);
    psql(&format!(
        "DROP TABLE {t}; DROP TABLE {t}_flag; DROP FUNCTION {t}_f()"
    ));
}

#[test]
fn postgres_outbox_rows_are_deleted_after_the_sinks_confirmed() {
    if !postgres_available() {
        return;
    }
    let t = unique_name("outbox");
    psql(&format!(
        "CREATE TABLE {t} (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
         CREATE TABLE {t}_out (id text PRIMARY KEY, total int)"
    ));
    let sb = Sandbox::new();
    sb.write(
        "schemas/event.v1.json",
        r#"{"type":"object","required":["order"],"properties":{"total":{"type":"integer"}}}"#,
    );
    sb.write(
        "flows/outbox.yaml",
        format!(
            r#"name: outbox
trigger:
  postgres: {{ url: "{POSTGRES_URL}", table: {t}, batch: 16, poll: 100ms }}
contract: {{ input: event.v1 }}
steps:
  - to: rows
sinks:
  rows:
    postgres: {{ url: "{POSTGRES_URL}", table: {t}_out, columns: {{ id: order, total: total }} }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut values = Vec::new();
    for i in 0..50 {
        values.push(format!("('{{\"order\": \"e-{i}\", \"total\": {i}}}')"));
    }
    values.push("('{\"order\": \"bad\", \"total\": \"lots\"}')".to_owned());
    psql(&format!(
        "INSERT INTO {t} (payload) VALUES {}",
        values.join(", ")
    ));
    let mut sluice = Sluice::run(&sb);
    sluice.expect_within(secs(60), "50 rows out", || {
        psql(&format!("SELECT count(*) FROM {t}_out")) == "50"
    });
    sluice.expect_within(secs(30), "the outbox is empty", || {
        psql(&format!("SELECT count(*) FROM {t}")) == "0"
    });
    assert_eq!(sb.count("dead-letter"), 1);
    assert_eq!(
        psql(&format!("SELECT total FROM {t}_out WHERE id = 'e-42'")),
        "42"
    );
    drop(sluice);
    psql(&format!("DROP TABLE {t}; DROP TABLE {t}_out"));
}

#[test]
fn postgres_undecodable_body_goes_to_the_dead_letter() {
    if !postgres_available() {
        return;
    }
    let t = unique_name("outboxu");
    // A `text` payload column, so a row can hold something that is not JSON.
    psql(&format!(
        "CREATE TABLE {t} (id bigserial PRIMARY KEY, payload text NOT NULL);
         CREATE TABLE {t}_out (id text PRIMARY KEY, n int)"
    ));
    let sb = Sandbox::new();
    sb.write(
        "flows/outboxu.yaml",
        format!(
            r#"name: outboxu
trigger:
  postgres: {{ url: "{POSTGRES_URL}", table: {t}, batch: 16, poll: 100ms }}
steps:
  - to: rows
sinks:
  rows:
    postgres: {{ url: "{POSTGRES_URL}", table: {t}_out, columns: {{ id: id, n: n }} }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    psql(&format!(
        "INSERT INTO {t} (payload) VALUES ('not json {{');
         INSERT INTO {t} (payload) VALUES ('{{\"id\": \"good-1\", \"n\": 1}}')"
    ));
    let bad_id = psql(&format!("SELECT id FROM {t} WHERE payload = 'not json {{'"));
    let mut sluice = Sluice::run(&sb);
    sluice.expect_within(secs(60), "the good row out", || {
        psql(&format!("SELECT count(*) FROM {t}_out")) == "1"
    });
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    sluice.expect_within(secs(30), "the outbox is empty", || {
        psql(&format!("SELECT count(*) FROM {t}")) == "0"
    });
    // Several polls later: nothing is taken again.
    std::thread::sleep(millis(1000));
    assert_eq!(sb.count("dead-letter"), 1, "dead-lettered once");
    assert_eq!(psql(&format!("SELECT id, n FROM {t}_out")), "good-1|1");
    let dead = undecodable_dead_letter(&sb, "not json {", "the payload column is not JSON");
    assert_eq!(dead["meta"]["postgres.table"], t.as_str(), "{dead:#}");
    assert_eq!(dead["meta"]["postgres.id"], bad_id.as_str(), "{dead:#}");
    assert_eq!(
        dead["meta"]["message_id"],
        format!("{t}-{bad_id}"),
        "{dead:#}"
    );
    let log = sluice.log();
    assert_logged_once(
        &log,
        "message failed: trigger error: the payload column is not JSON",
        "outboxu",
    );
    drop(sluice);
    psql(&format!("DROP TABLE {t}; DROP TABLE {t}_out"));
}
