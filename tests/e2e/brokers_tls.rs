//! TLS for PostgreSQL and Redis end to end, against private servers that accept TLS only,
//! with certificates the test makes (`support::certs`): a connection verified against a
//! private CA delivers (sink, outbox trigger, stream trigger); one that trusts another CA is
//! refused with the TLS library's reason in the dead letter; broken TLS settings are load
//! errors at their position.

use crate::support::certs::make_certificates;
use crate::support::tls_servers::*;
use crate::support::*;
use std::path::Path;

/// Copies the test CA, the client certificate and a second, unrelated CA into the sandbox's
/// `certs/` (ca.pem, client.pem, client.key, wrong-ca.pem).
fn install_certificates(sb: &Sandbox, certs: &Path, wrong: &Path) {
    std::fs::create_dir_all(sb.path("certs")).expect("certs folder");
    for name in ["ca.pem", "client.pem", "client.key"] {
        std::fs::copy(certs.join(name), sb.path(&format!("certs/{name}"))).expect("copy");
    }
    std::fs::copy(wrong.join("ca.pem"), sb.path("certs/wrong-ca.pem")).expect("copy");
}

fn temp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temporary folder")
}

const FILE: &str = "file: { path: inbox, min_age: 50ms, check_interval: 50ms, stable_checks: 1 }";

#[test]
fn postgres_over_tls_is_verified_against_a_private_ca_and_a_wrong_ca_is_refused() {
    if !private_postgres_possible() {
        return;
    }
    let (certs, wrong) = (temp("sluice-pg-certs-"), temp("sluice-pg-wrong-"));
    make_certificates(certs.path());
    make_certificates(wrong.path());
    let pg = TlsPostgres::start(certs.path());
    let url = pg.url();
    pg.psql(
        "CREATE TABLE rows (id text PRIMARY KEY, via text);
         CREATE TABLE box (id bigserial PRIMARY KEY, payload jsonb NOT NULL)",
    )
    .expect("tables");
    let sb = Sandbox::new();
    install_certificates(&sb, certs.path(), wrong.path());
    let flow = |name: &str, trigger: &str, sink: &str| {
        sb.write(
            &format!("flows/{name}.yaml"),
            format!(
                "name: {name}\ntrigger:\n  {}\nsteps:\n  - to: out\nsinks:\n  out:\n    {sink}\nerrors:\n  retry: {{ attempts: 1 }}\n  dead_letter: {{ file: {{ path: dead-{name} }} }}\n",
                trigger.replace("inbox", &format!("inbox-{name}"))
            ),
        );
    };
    let sink = |tls: &str| {
        format!(
            "postgres: {{ url: \"{url}\", {tls}table: rows, columns: {{ id: id, via: \"meta('flow')\" }} }}"
        )
    };
    flow(
        "verified",
        FILE,
        &sink("tls: { ca: certs/ca.pem, cert: certs/client.pem, key: certs/client.key }, "),
    );
    flow("encrypted", FILE, &sink("tls: { mode: require }, "));
    flow("wrongca", FILE, &sink("tls: { ca: certs/wrong-ca.pem }, "));
    flow("plain", FILE, &sink(""));
    flow(
        "outbox",
        &format!(
            "postgres: {{ url: \"{url}\", table: box, poll: 100ms, tls: {{ mode: verify-full, ca: certs/ca.pem }} }}"
        ),
        "file: { path: outbox, name: \"{{ id }}.json\" }",
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("postgres outbox ready", secs(30));
    for i in 0..3 {
        sb.drop_json(
            "inbox-verified",
            &format!("{i}.json"),
            &json!({ "id": format!("v-{i}") }),
        );
    }
    sb.drop_json("inbox-encrypted", "e.json", &json!({ "id": "e-0" }));
    sb.drop_json("inbox-wrongca", "w.json", &json!({ "id": "w-0" }));
    sb.drop_json("inbox-plain", "p.json", &json!({ "id": "p-0" }));
    pg.psql(r#"INSERT INTO box (payload) VALUES ('{"id": "b-0"}'), ('{"id": "b-1"}')"#)
        .expect("outbox rows");
    let rows = || pg.psql("SELECT count(*) FROM rows").unwrap_or_default();
    sluice.expect_within(secs(30), "four rows over TLS", || rows() == "4");
    assert_eq!(
        pg.psql("SELECT string_agg(id || '=' || via, ' ' ORDER BY id) FROM rows")
            .unwrap(),
        "e-0=encrypted v-0=verified v-1=verified v-2=verified"
    );
    sluice.expect_within(secs(30), "the outbox delivered over TLS", || {
        sb.count("outbox") == 2
    });
    sluice.expect_within(secs(30), "the outbox is empty", || {
        pg.psql("SELECT count(*) FROM box").as_deref() == Ok("0")
    });
    // Trusting another CA: refused, with the reason (both test CAs have one name, so the
    // issuer is found and its signature does not match).
    sluice.expect_within(secs(30), "the wrong CA's dead letter", || {
        sb.count("dead-wrongca") == 1
    });
    let dead = sb.only_json("dead-wrongca");
    let message = dead["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("invalid peer certificate: BadSignature"),
        "{dead:#}"
    );
    // Without TLS the server (hostssl only) refuses the connection.
    sluice.expect_within(secs(30), "the plain connection's dead letter", || {
        sb.count("dead-plain") == 1
    });
    let dead = sb.only_json("dead-plain");
    assert!(
        dead["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no encryption")),
        "{dead:#}"
    );
    drop(sluice);

    // Broken TLS settings are load errors at their position.
    let check = |tls: &str| {
        sb.write(
            "flows/verified.yaml",
            format!("name: verified\ntrigger:\n  {FILE}\nsinks:\n  out:\n    postgres:\n      url: \"{url}\"\n      table: rows\n      columns: {{ id: id }}\n      tls: {tls}\n"),
        );
        let out = sb.cli(&["check", "flows/verified.yaml"], None);
        assert_eq!(out.code, Some(1), "{}", out.all());
        out.all()
    };
    let text = check("{ ca: certs/nowhere.pem }");
    assert!(
        text.contains("verified.yaml:10:18") && text.contains("nowhere.pem"),
        "{text}"
    );
    let text = check("{ mode: require, ca: certs/ca.pem }");
    assert!(
        text.contains("verified.yaml:10:") && text.contains("`mode: require` does not check"),
        "{text}"
    );
    let text = check("{ mode: verify-ca }");
    assert!(text.contains("verified.yaml:10:"), "{text}");
}

#[test]
fn redis_over_tls_with_a_client_certificate_delivers_and_a_wrong_ca_is_refused() {
    if !program_available("redis-server")
        || !program_available("redis-cli")
        || !program_available("openssl")
    {
        return;
    }
    let (certs, wrong) = (temp("sluice-redis-certs-"), temp("sluice-redis-wrong-"));
    make_certificates(certs.path());
    make_certificates(wrong.path());
    let (_redis, port) = tls_redis(certs.path());
    let url = format!("rediss://127.0.0.1:{port}");
    let u = unique_name("rtls");
    let tls = "{ ca: certs/ca.pem, cert: certs/client.pem, key: certs/client.key }";
    let sb = Sandbox::new();
    install_certificates(&sb, certs.path(), wrong.path());
    sb.write(
        "flows/rin.yaml",
        format!(
            "name: rin\ntrigger:\n  {FILE}\nsteps:\n  - to: out\nsinks:\n  out:\n    redis: {{ url: \"{url}\", stream: {u}, tls: {tls} }}\n"
        ),
    );
    sb.write(
        "flows/rout.yaml",
        format!(
            "name: rout\ntrigger:\n  redis: {{ url: \"{url}\", stream: {u}, group: g, tls: {tls} }}\nsteps:\n  - to: out\nsinks:\n  out:\n    file: {{ path: outbox, name: \"{{{{ id }}}}.json\" }}\n"
        ),
    );
    sb.write(
        "flows/rwrong.yaml",
        format!(
            "name: rwrong\ntrigger:\n  file: {{ path: inbox-wrong, min_age: 50ms, check_interval: 50ms, stable_checks: 1 }}\nsteps:\n  - to: out\nsinks:\n  out:\n    redis: {{ url: \"{url}\", stream: {u}_w, tls: {{ ca: certs/wrong-ca.pem, cert: certs/client.pem, key: certs/client.key }} }}\nerrors:\n  retry: {{ attempts: 1 }}\n  dead_letter: {{ file: {{ path: dead-wrong }} }}\n"
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("rout");
    sluice.wait_ready("rin");
    for i in 0..3 {
        sb.drop_json(
            "inbox",
            &format!("{i}.json"),
            &json!({ "id": format!("r-{i}") }),
        );
    }
    sb.drop_json("inbox-wrong", "w.json", &json!({ "id": "w-0" }));
    sluice.expect_within(secs(30), "three messages through the TLS stream", || {
        sb.count("outbox") == 3
    });
    assert_eq!(redis_tls_cli(certs.path(), port, &["XLEN", &u]), "3");
    sluice.expect_within(secs(30), "the wrong CA's dead letter", || {
        sb.count("dead-wrong") == 1
    });
    let dead = sb.only_json("dead-wrong");
    let message = dead["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("invalid peer certificate: BadSignature"),
        "{dead:#}"
    );
    assert_eq!(
        redis_tls_cli(certs.path(), port, &["EXISTS", &format!("{u}_w")]),
        "0"
    );
    drop(sluice);

    // `tls` without `rediss://` and a missing file are load errors at their position.
    let check = |sink: &str| {
        sb.write(
            "flows/rin.yaml",
            format!("name: rin\ntrigger:\n  {FILE}\nsinks:\n  out:\n    redis: {sink}\n"),
        );
        let out = sb.cli(&["check", "flows/rin.yaml"], None);
        assert_eq!(out.code, Some(1), "{}", out.all());
        out.all()
    };
    let text = check("{ url: \"redis://127.0.0.1:6379\", stream: s, tls: { ca: certs/ca.pem } }");
    assert!(
        text.contains("rin.yaml:6:") && text.contains("rediss://"),
        "{text}"
    );
    let text = check(&format!(
        "{{ url: \"{url}\", stream: s, tls: {{ ca: certs/nowhere.pem }} }}"
    ));
    assert!(
        text.contains("rin.yaml:6:") && text.contains("nowhere.pem"),
        "{text}"
    );
}
