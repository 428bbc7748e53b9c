//! MQTT over TLS end to end: a private `mosquitto` with a TLS listener that requires client
//! certificates, all signed by a certificate authority the test makes with `openssl`. sluice
//! subscribes and publishes through `mqtts://` with `tls: { ca, cert, key }`; load errors for
//! broken TLS settings name the file, line and column.

use crate::support::certs::make_certificates;
use crate::support::mosquitto::{Mosquitto, mosquitto_installed};
use crate::support::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// Publishes one QoS 1 message over TLS with the client certificate.
fn publish_tls(certs: &Path, port: u16, topic: &str, body: &str) {
    let cert = |name: &str| certs.join(name).display().to_string();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            body,
        ])
        .args(["--cafile", &cert("ca.pem"), "--cert", &cert("client.pem")])
        .args(["--key", &cert("client.key")])
        .stdin(Stdio::null())
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success(), "mosquitto_pub over TLS failed");
}

fn tools_installed() -> bool {
    mosquitto_installed() && program_available("openssl") && program_available("mosquitto_pub")
}

#[test]
fn mqtt_over_tls_with_a_private_ca_and_a_client_certificate() {
    if !tools_installed() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("sluice-mosquitto-tls-")
        .tempdir()
        .expect("broker dir");
    make_certificates(dir.path());
    let pem = |name: &str| dir.path().join(name).display().to_string();
    let listener = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        pem("ca.pem"),
        pem("server.pem"),
        pem("server.key")
    );
    let broker = Mosquitto::start_with(dir.path(), &listener);
    let port = broker.port;

    let sb = Sandbox::new();
    for name in ["ca.pem", "client.pem", "client.key"] {
        std::fs::copy(dir.path().join(name), sb.path(&format!("certs/{name}")))
            .or_else(|_| {
                std::fs::create_dir_all(sb.path("certs"))?;
                std::fs::copy(dir.path().join(name), sb.path(&format!("certs/{name}")))
            })
            .expect("copy certificates");
    }
    let u = unique_name("mqtls");
    let tls = "{ ca: certs/ca.pem, cert: certs/client.pem, key: certs/client.key }";
    sb.write(
        "flows/secure.yaml",
        format!(
            r#"name: secure
trigger:
  mqtt:
    url: mqtts://127.0.0.1:{port}
    topics: ["{u}/in/+"]
    client_id: sluice-{u}
    tls: {tls}
steps:
  - set: {{ topic: "meta('mqtt.topic')" }}
  - to: files
  - to: echo
sinks:
  files:
    file: {{ path: outbox, name: "{{{{ id }}}}.json" }}
  echo:
    mqtt: {{ url: "mqtts://127.0.0.1:{port}", topic: "{u}/out", tls: {tls} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("mqtt session ready", secs(30));
    // What the `echo` sink publishes, read back over TLS: 5 messages, 30 s at most.
    let cert = |name: &str| dir.path().join(name).display().to_string();
    let subscriber = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &format!("{u}/out"), "-C", "5", "-W", "30"])
        .args(["--cafile", &cert("ca.pem"), "--cert", &cert("client.pem")])
        .args(["--key", &cert("client.key")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub");
    // mosquitto_sub has no "subscribed" signal: give it a moment before publishing.
    std::thread::sleep(millis(500));
    for i in 0..5 {
        publish_tls(
            dir.path(),
            port,
            &format!("{u}/in/eu"),
            &format!(r#"{{"id":"t-{i}"}}"#),
        );
    }
    sluice.expect_within(secs(30), "5 messages through TLS", || {
        sb.count("outbox") == 5
    });
    let first = sb.read_json("outbox/t-0.json");
    assert_eq!(first["topic"], json!(format!("{u}/in/eu")));
    // The sink published through TLS too.
    let echoed = subscriber.wait_with_output().expect("mosquitto_sub");
    let echoed = String::from_utf8_lossy(&echoed.stdout);
    assert_eq!(
        echoed.lines().count(),
        5,
        "echoed: {echoed}\n{}",
        sluice.log_tail(20)
    );
    assert!(echoed.contains(r#""id":"t-4""#), "{echoed}");
    drop(sluice);
    drop(broker);

    // Broken TLS settings are load errors at their position.
    let check = |flow: &str| {
        sb.write("flows/secure.yaml", flow);
        sb.cli(&["check", "flows/secure.yaml"], None)
    };
    let missing = format!(
        "name: secure\ntrigger:\n  mqtt:\n    url: mqtts://127.0.0.1:{port}\n    topics: [a/b]\n    tls: {{ ca: certs/nowhere.pem }}\n"
    );
    let out = check(&missing);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.all().contains("secure.yaml:6:16") && out.all().contains("nowhere.pem"),
        "{}",
        out.all()
    );
    let plain = "name: secure\ntrigger:\n  mqtt:\n    url: mqtt://127.0.0.1:1883\n    topics: [a/b]\n    tls: { ca: certs/ca.pem }\n";
    let out = check(plain);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.all().contains("secure.yaml:6:10") && out.all().contains("mqtts://"),
        "{}",
        out.all()
    );
    let half = format!(
        "name: secure\ntrigger:\n  mqtt:\n    url: mqtts://127.0.0.1:{port}\n    topics: [a/b]\n    tls: {{ cert: certs/client.pem }}\n"
    );
    let out = check(&half);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.all().contains("secure.yaml:6:18") && out.all().contains("`key`"),
        "{}",
        out.all()
    );
}
