//! The `mqtt` connector (MQTT 3.1.1 through rumqttc, TLS through rustls): a subscriber in a
//! persistent session whose QoS 1 messages are acknowledged (PUBACK) only after the flow's
//! sinks confirmed, and a publisher that waits for the broker's PUBACK.

mod sink;
mod trigger;

pub use sink::MqttSink;
pub use trigger::MqttTrigger;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use sluice_flow::{Dur, MqttQos};
use std::sync::Arc;
use std::time::Duration;

/// The largest packet MQTT can carry (its remaining-length field tops out at 256 MiB).
/// rumqttc's own default is 10 KiB; a message above the client's limit would break the
/// connection and come back at every reconnect, so the limit is the protocol's.
const MAX_PACKET: usize = 268_435_455;

/// Where a broker is and how to log in, from a `mqtt://` or `mqtts://` URL.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    port: u16,
    tls: bool,
    login: Option<(String, String)>,
}

impl Endpoint {
    /// Parses the URL; an error says what is wrong without repeating the URL (it may hold a
    /// password).
    fn parse(url: &str) -> Result<Endpoint, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            format!("the URL cannot be read ({e}); write e.g. mqtt://127.0.0.1:1883")
        })?;
        let tls = match parsed.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "the URL scheme `{other}` is not MQTT; use mqtt:// (plain) or mqtts:// (TLS)"
                ));
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host; write e.g. mqtt://127.0.0.1:1883")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(
                "the URL has a path or query, which MQTT does not use; write scheme://[user:password@]host:port"
                    .to_owned(),
            );
        }
        let login = (!parsed.username().is_empty()).then(|| {
            (
                percent_decode(parsed.username()),
                percent_decode(parsed.password().unwrap_or("")),
            )
        });
        Ok(Endpoint {
            host,
            port: parsed.port().unwrap_or(if tls { 8883 } else { 1883 }),
            tls,
            login,
        })
    }

    /// Client options for one connection; acknowledgements of received messages are ours.
    fn options(&self, client_id: &str, keep_alive: Duration, clean_session: bool) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options
            .set_keep_alive(keep_alive)
            .set_clean_session(clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            // Acks and publishes of every worker go through this channel; the event loop is
            // always being polled, so it never stays full for long.
            .set_request_channel_capacity(1024);
        if let Some((user, password)) = &self.login {
            options.set_credentials(user.clone(), password.clone());
        }
        if self.tls {
            options.set_transport(Transport::tls_with_config(tls_config()));
        }
        options
    }
}

/// TLS with the system's root certificates and the ring provider (the one every other
/// connector uses; rustls picks no provider by itself when several are compiled in).
fn tls_config() -> TlsConfiguration {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the store cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // ring supports the default versions; this only guards a future provider change.
        Err(e) => {
            tracing::error!("mqtt: TLS set-up failed: {e}");
            rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    TlsConfiguration::Rustls(Arc::new(config))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn qos(qos: MqttQos) -> rumqttc::QoS {
    match qos {
        MqttQos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        MqttQos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
    }
}

/// MQTT keep-alive is a whole number of seconds (0 turns it off); `None` when `keep_alive`
/// is not one.
fn keep_alive(keep_alive: Dur) -> Option<Duration> {
    let d = keep_alive.0;
    (d.subsec_nanos() == 0 && d.as_secs() <= u64::from(u16::MAX)).then_some(d)
}

/// Checks a topic filter; the error carries the byte offset of the offending character.
fn check_filter(filter: &str) -> Result<(), (usize, String)> {
    if filter.is_empty() {
        return Err((0, "the topic filter is empty".to_owned()));
    }
    if filter.len() > usize::from(u16::MAX) {
        return Err((0, "the topic filter is longer than 65,535 bytes".to_owned()));
    }
    let mut start = 0;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if let Some(at) = level.find('\0') {
            return Err((start + at, "a topic filter cannot contain NUL".to_owned()));
        }
        if let Some(at) = level.find('#')
            && (*level != "#" || i + 1 != levels.len())
        {
            return Err((
                start + at,
                "`#` matches all remaining levels, so it must be a whole level and the last one (e.g. `sensors/#`)".to_owned(),
            ));
        }
        if let Some(at) = level.find('+')
            && *level != "+"
        {
            return Err((
                start + at,
                "`+` matches one whole level, so it must stand alone between slashes (e.g. `sensors/+/temp`)".to_owned(),
            ));
        }
        start += level.len() + 1;
    }
    Ok(())
}

/// Checks a topic to publish to: not empty, no wildcards, no NUL.
fn check_topic(topic: &str) -> Result<(), (usize, String)> {
    if topic.is_empty() {
        return Err((0, "the topic is empty".to_owned()));
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err((0, "the topic is longer than 65,535 bytes".to_owned()));
    }
    if let Some(at) = topic.find(['+', '#']) {
        return Err((
            at,
            "a topic to publish to cannot contain the wildcards `+` or `#`".to_owned(),
        ));
    }
    if let Some(at) = topic.find('\0') {
        return Err((at, "a topic cannot contain NUL".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read() {
        let e = Endpoint::parse("mqtt://u%40x:p%3Aw@broker.local:1884").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("broker.local", 1884, false)
        );
        assert_eq!(e.login, Some(("u@x".to_owned(), "p:w".to_owned())));
        let e = Endpoint::parse("mqtts://broker.local").unwrap();
        assert_eq!((e.port, e.tls), (8883, true));
        assert!(
            Endpoint::parse("http://broker.local")
                .unwrap_err()
                .contains("mqtt://")
        );
        assert!(Endpoint::parse("mqtt://broker.local/x").is_err());
        let secret = Endpoint::parse("amqp://u:hunter2@h").unwrap_err();
        assert!(!secret.contains("hunter2"));
    }

    #[test]
    fn filters_are_checked() {
        for good in ["a", "a/+/c", "a/#", "#", "+", "+/+", "/a", "a//b"] {
            assert!(check_filter(good).is_ok(), "{good}");
        }
        assert_eq!(check_filter("a/#/b").unwrap_err().0, 2);
        assert_eq!(check_filter("a/b#").unwrap_err().0, 3);
        assert_eq!(check_filter("a/x+/c").unwrap_err().0, 3);
        assert!(check_filter("").is_err());
    }

    #[test]
    fn topics_are_checked() {
        assert!(check_topic("out/eu").is_ok());
        assert_eq!(check_topic("out/+").unwrap_err().0, 4);
        assert!(check_topic("").is_err());
    }

    #[test]
    fn keep_alive_is_whole_seconds() {
        assert!(keep_alive(Dur(Duration::from_secs(30))).is_some());
        assert!(keep_alive(Dur(Duration::ZERO)).is_some());
        assert!(keep_alive(Dur(Duration::from_millis(1500))).is_none());
    }
}
