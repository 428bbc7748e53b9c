//! MQTT helpers for the broker tests: a test-side client (rumqttc on its own small runtime),
//! a guard that ends sluice's persistent session, and flows and waits the MQTT tests share.

use super::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The shared Mosquitto broker's port.
pub const MQTT_PORT: u16 = 1883;

/// The `mqtt://` URL of a broker on 127.0.0.1.
pub fn url(port: u16) -> String {
    format!("mqtt://127.0.0.1:{port}")
}

/// What the test client's event loop saw.
#[derive(Default)]
pub struct Seen {
    /// Incoming publishes: (topic, body).
    received: Mutex<Vec<(String, Vec<u8>)>>,
    connacks: AtomicUsize,
    subacks: AtomicUsize,
    pubacks: AtomicUsize,
}

/// A test-side MQTT client (clean session); its event loop is polled in its own task on a
/// small runtime owned by the struct.
pub struct Mqtt {
    rt: tokio::runtime::Runtime,
    client: AsyncClient,
    seen: Arc<Seen>,
    poller: Option<tokio::task::JoinHandle<()>>,
    published: usize,
}

impl Mqtt {
    /// Connects with a fresh client id.
    pub fn connect(port: u16) -> Mqtt {
        Mqtt::connect_as(port, &unique_name("sluice_test_client"))
    }

    /// Connects with `client_id` and a clean session; waits for the CONNACK.
    pub fn connect_as(port: u16, client_id: &str) -> Mqtt {
        Mqtt::try_connect_as(port, client_id).unwrap_or_else(|| {
            panic!("no CONNACK from the MQTT broker on 127.0.0.1:{port} within 10 s")
        })
    }

    /// Like [`Mqtt::connect_as`]; `None` when no CONNACK came within 10 s.
    pub fn try_connect_as(port: u16, client_id: &str) -> Option<Mqtt> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_clean_session(true)
            .set_keep_alive(secs(30))
            .set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let seen = Arc::new(Seen::default());
        let poller = {
            let seen = seen.clone();
            rt.spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(p))) => seen
                            .received
                            .lock()
                            .unwrap()
                            .push((p.topic, p.payload.to_vec())),
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            seen.pubacks.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            seen.subacks.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            seen.connacks.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        // Broker away: the next poll connects again.
                        Err(_) => tokio::time::sleep(millis(100)).await,
                    }
                }
            })
        };
        let mqtt = Mqtt {
            rt,
            client,
            seen,
            poller: Some(poller),
            published: 0,
        };
        wait_until(secs(10), || mqtt.seen.connacks.load(Ordering::SeqCst) >= 1).then_some(mqtt)
    }

    /// Subscribes to `filter` at QoS 1 and waits for the SUBACK.
    pub fn subscribe(&self, filter: &str) {
        let before = self.seen.subacks.load(Ordering::SeqCst);
        self.rt
            .block_on(self.client.subscribe(filter, QoS::AtLeastOnce))
            .expect("subscribe");
        assert!(
            wait_until(secs(10), || self.seen.subacks.load(Ordering::SeqCst)
                > before),
            "no SUBACK for {filter} within 10 s"
        );
    }

    /// Publishes at QoS 1 (not retained); [`Mqtt::flush`] waits for the PUBACKs.
    pub fn publish(&mut self, topic: &str, body: impl Into<Vec<u8>>) {
        self.rt
            .block_on(
                self.client
                    .publish(topic, QoS::AtLeastOnce, false, body.into()),
            )
            .expect("publish");
        self.published += 1;
    }

    pub fn publish_json(&mut self, topic: &str, body: &Value) {
        self.publish(topic, serde_json::to_vec(body).expect("serialize"));
    }

    /// Waits until the broker acknowledged (PUBACK) every message published so far.
    pub fn flush(&self) {
        let all = wait_until(secs(30), || {
            self.seen.pubacks.load(Ordering::SeqCst) >= self.published
        });
        assert!(
            all,
            "the broker acknowledged {} of {} publishes within 30 s",
            self.seen.pubacks.load(Ordering::SeqCst),
            self.published
        );
    }

    /// The publishes received so far: (topic, JSON body; `null` when the body is not JSON).
    pub fn received(&self) -> Vec<(String, Value)> {
        self.seen
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|(t, b)| (t.clone(), serde_json::from_slice(b).unwrap_or(Value::Null)))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.seen.received.lock().unwrap().len()
    }

    /// Sends DISCONNECT and waits (bounded) for the event loop to finish.
    pub fn disconnect(mut self) {
        let _ = self.rt.block_on(self.client.disconnect());
        if let Some(poller) = self.poller.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(secs(5), poller).await });
        }
    }
}

/// Names of one test's own: its topics live under `prefix` (`sluice-test/<unique>`), sluice's
/// session is `client_id`, and `session` ends that session when the test is done.
pub struct TestNames {
    pub prefix: String,
    pub client_id: String,
    pub session: Session,
}

impl TestNames {
    /// Fresh names from `tag`, with the session guard for a broker on `port`.
    pub fn new(port: u16, tag: &str) -> TestNames {
        let u = unique_name(tag);
        let client_id = format!("sluice-{u}");
        TestNames {
            prefix: format!("sluice-test/{u}"),
            session: Session::new(port, &client_id),
            client_id,
        }
    }
}

/// sluice's persistent session `client_id` on the shared broker, ended when the guard drops:
/// a clean-session connect under the same id makes the broker discard it. Declare the guard
/// before the sluice processes, so they are killed first (also when the test fails).
pub struct Session {
    port: u16,
    client_id: String,
}

impl Session {
    pub fn new(port: u16, client_id: &str) -> Session {
        Session {
            port,
            client_id: client_id.to_owned(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Best effort: never panic here (the test may already be unwinding).
        if let Some(mqtt) = Mqtt::try_connect_as(self.port, &self.client_id) {
            mqtt.disconnect();
        }
    }
}

/// Waits for `mqtt session ready` with `flow=<flow>`; returns the line.
pub fn wait_session(sluice: &mut Sluice, flow: &str) -> String {
    sluice.wait_for_line(
        &format!("`mqtt session ready` for flow={flow}"),
        secs(30),
        |l| l.contains("mqtt session ready") && has_flow(l, flow),
    )
}

/// `m-<from>.json` … `m-<to - 1>.json`.
pub fn file_names_for(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("m-{i}.json")).collect()
}

/// A flow forwarding `<prefix>/in` to `outbox/<id>.json`, throttled to `rate` (so a stop can
/// land in the middle of a batch).
pub fn file_forward_flow(port: u16, prefix: &str, client_id: &str, throttle: &str) -> String {
    format!(
        r#"name: fwd
concurrency: 8
trigger:
  mqtt:
    url: "{url}"
    topics: ["{prefix}/in"]
    client_id: "{client_id}"
    redeliver_delay: 200ms
steps:
{throttle}  - set: {{ topic: "meta('mqtt.topic')" }}
  - to: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{id}}}}.json" }}
errors:
  retry: {{ attempts: 10, backoff: 100ms, max_backoff: 2s }}
"#,
        url = url(port)
    )
}
