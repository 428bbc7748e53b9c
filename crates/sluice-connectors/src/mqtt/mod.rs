//! The `mqtt` connector (MQTT 3.1.1 through rumqttc, TLS through rustls): a subscriber in a
//! persistent session whose QoS 1 messages are acknowledged (PUBACK) only after the flow's
//! sinks confirmed, and a publisher that waits for the broker's PUBACK.

mod sink;
mod trigger;

pub use sink::MqttSink;
pub use trigger::MqttTrigger;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use sluice_engine::BuildContext;
use sluice_flow::{Diagnostic, Dur, MqttQos, MqttTls, Spanned, Text};
use std::sync::Arc;
use std::time::Duration;

/// Why a URL could not be read: the URL parser's error (named through `reqwest`, which is
/// where the parser comes from here).
type UrlParseError = <reqwest::Url as std::str::FromStr>::Err;

/// What went wrong with an MQTT broker: a `url` that cannot be used (a load diagnostic at
/// the `url`), or a failure of the connection, the subscription or a publish (the trigger's
/// unhealthy reason, or a retryable `sink` error). None repeats the URL: it may hold a
/// password. Cloneable, because one broken connection fails every publish waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MqttError {
    /// The `url` is not a URL at all.
    #[error("the URL cannot be read ({0}); write e.g. mqtt://127.0.0.1:1883")]
    UnreadableUrl(#[source] UrlParseError),
    /// A URL of another protocol.
    #[error("the URL scheme `{0}` is not MQTT; use mqtt:// (plain) or mqtts:// (TLS)")]
    Scheme(String),
    /// A URL without a host.
    #[error("the URL has no host; write e.g. mqtt://127.0.0.1:1883")]
    NoHost,
    /// A URL with a path or query, which would be silently ignored.
    #[error(
        "the URL has a path or query, which MQTT does not use; write scheme://[user:password@]host:port"
    )]
    PathOrQuery,
    /// The trigger's connection ended with the client's error (refused, reset, keep-alive
    /// timeout).
    #[error("{0}")]
    Lost(#[source] Arc<rumqttc::ConnectionError>),
    /// The connection ended without an error (the broker closed it).
    #[error("the connection closed")]
    Closed,
    /// The broker did not answer CONNACK or SUBACK in time.
    #[error("no answer from the broker within {}s", .0.as_secs())]
    NoAnswer(Duration),
    /// The broker sent something else where CONNACK was due.
    #[error("the broker answered before CONNACK")]
    NoConnAck,
    /// The subscription could not be sent.
    #[error("subscribe: {0}")]
    Subscribe(#[source] Arc<rumqttc::ClientError>),
    /// The broker sent something else where SUBACK was due.
    #[error("the broker did not answer the subscription")]
    NoSubAck,
    /// The broker refused one topic filter of the subscription.
    #[error("the broker refused the subscription to `{0}` (check its access control list)")]
    SubscriptionRefused(String),
    /// The sink's connection failed; every publish waiting on it fails with this.
    #[error("mqtt connection: {0}")]
    Connection(#[source] Arc<rumqttc::ConnectionError>),
    /// The sink's connection ended before the broker's CONNACK.
    #[error("mqtt connection: closed while connecting")]
    ClosedWhileConnecting,
    /// The broker sent no CONNACK to the sink in time.
    #[error("mqtt connection: no CONNACK within {}s", .0.as_secs())]
    NoConnAckWithin(Duration),
    /// A publish could not be handed to the sink's connection.
    #[error("mqtt publish: {0}")]
    Publish(#[source] Arc<rumqttc::ClientError>),
}

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
    /// The TLS client configuration, built at load from the `tls:` settings (for `mqtts`).
    tls_config: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    /// Parses the URL; an error says what is wrong without repeating the URL (it may hold a
    /// password).
    fn parse(url: &str) -> Result<Endpoint, MqttError> {
        let parsed = reqwest::Url::parse(url).map_err(MqttError::UnreadableUrl)?;
        let tls = match parsed.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(MqttError::Scheme(other.to_owned())),
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(MqttError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(MqttError::PathOrQuery);
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
            tls_config: None,
        })
    }

    /// The endpoint of a trigger's or sink's `url`, with its `tls:` settings read (the
    /// certificate files are loaded now, so a missing or broken one is a load error).
    fn load(
        url: &Spanned<Text>,
        tls: Option<&Spanned<MqttTls>>,
        cx: &BuildContext<'_>,
    ) -> Result<Endpoint, Diagnostic> {
        let mut endpoint = Endpoint::parse(&url.value).map_err(|e| {
            cx.diagnostic(url, e.to_string()).with_help(
                "e.g. url: mqtt://127.0.0.1:1883, or mqtts://user:${env:MQTT_PASSWORD}@broker:8883",
            )
        })?;
        if let Some(settings) = tls
            && !endpoint.tls
        {
            return Err(cx
                .diagnostic(settings, "`tls` settings need an `mqtts://` URL")
                .with_help("write the url as mqtts://host:8883, or remove `tls`"));
        }
        if endpoint.tls {
            let files = tls
                .map(|t| crate::tls::Files::from(&t.value))
                .unwrap_or_default();
            let loaded = crate::tls::Loaded::read(files, cx)?;
            endpoint.tls_config =
                Some(loaded.client_config(crate::tls::Verify::Full, files, cx)?);
        }
        Ok(endpoint)
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
        if let Some(config) = &self.tls_config {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                config.clone(),
            )));
        }
        options
    }
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

impl crate::TriggerComponent for sluice_flow::MqttTriggerConfig {
    const KEY: &'static str = "mqtt";

    fn build(
        &self,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, sluice_flow::Diagnostic> {
        Ok(Box::new(trigger::MqttTrigger::new(self, cx)?))
    }

    fn describe(&self) -> String {
        let topics: Vec<&str> = self.topics.value.iter().map(|t| t.value.as_str()).collect();
        format!("mqtt {}", topics.join(", "))
    }

    fn url(&self) -> Option<&str> {
        Some(self.url.value.as_str())
    }
}

impl crate::SinkComponent for sluice_flow::MqttSinkConfig {
    const KEY: &'static str = "mqtt";

    fn build(
        &self,
        _: &str,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(sink::MqttSink::new(self, cx)?))
    }
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
                .to_string()
                .contains("mqtt://")
        );
        assert!(Endpoint::parse("mqtt://broker.local/x").is_err());
        let secret = Endpoint::parse("amqp://u:hunter2@h")
            .unwrap_err()
            .to_string();
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
