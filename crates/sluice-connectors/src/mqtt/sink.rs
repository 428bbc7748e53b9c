//! The `mqtt` sink: publishes each message to a templated topic; at QoS 1 a write is
//! confirmed only when the broker's PUBACK for it arrived.
//!
//! rumqttc assigns packet ids inside its event loop and reports them in the order the
//! publishes were queued, so the sink queues a publish and its waiter under one lock and
//! matches the waiters to packet ids in that order. A connection that fails fails every
//! waiter (a retryable error) and the next write opens a new one, so that order never spans
//! two connections.

use super::{Endpoint, MqttError};
use crate::codec;
use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, Incoming, Outgoing as Sent, QoS};
use sluice_engine::Template;
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{Diagnostic, MessageFormat, MqttSinkConfig, Span};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), MqttError>>;

/// How long the broker has to answer a new connection with CONNACK.
const CONNACK_WITHIN: Duration = Duration::from_secs(10);

/// Publishes to an MQTT broker.
pub struct MqttSink {
    endpoint: Endpoint,
    client_id: String,
    topic: Template,
    qos: QoS,
    retain: bool,
    timeout: Duration,
    format: MessageFormat,
    live: tokio::sync::Mutex<Option<Live>>,
}

/// An open connection: its client, the waiters of its publishes and its event loop task.
struct Live {
    client: AsyncClient,
    waiters: Arc<Waiters>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.poller.abort();
    }
}

/// Publishes waiting for their packet id (queued order) and then for their PUBACK.
#[derive(Default)]
struct Waiters {
    open: AtomicBool,
    state: std::sync::Mutex<WaiterState>,
}

#[derive(Default)]
struct WaiterState {
    queued: VecDeque<(QoS, Waiter)>,
    sent: HashMap<u16, Waiter>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaiterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A publish left for the broker with packet id `pkid` (0 at QoS 0).
    fn sent(&self, pkid: u16) {
        let mut state = self.lock();
        if let Some((qos, waiter)) = state.queued.pop_front() {
            if qos == QoS::AtMostOnce {
                let _ = waiter.send(Ok(()));
            } else {
                state.sent.insert(pkid, waiter);
            }
        }
    }

    fn acknowledged(&self, pkid: u16) {
        if let Some(waiter) = self.lock().sent.remove(&pkid) {
            let _ = waiter.send(Ok(()));
        }
    }

    /// The connection failed: every publish still waiting fails with `why`.
    fn fail_all(&self, why: &MqttError) {
        self.open.store(false, Ordering::Release);
        let mut state = self.lock();
        for (_, waiter) in state.queued.drain(..) {
            let _ = waiter.send(Err(why.clone()));
        }
        for (_, waiter) in state.sent.drain() {
            let _ = waiter.send(Err(why.clone()));
        }
    }
}

impl MqttSink {
    /// Builds the sink, checking the URL and the topic template; nothing is opened yet.
    pub fn new(config: &MqttSinkConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let endpoint = Endpoint::load(&config.url, config.tls.as_deref(), cx)?;
        let at = |offset: usize| {
            sluice_flow::diagnostic::position_in_scalar(
                &cx.flow.source,
                Span::of(&config.topic),
                0,
                offset,
            )
        };
        let text = config.topic.value.as_str();
        let topic = Template::compile(text).map_err(|e| {
            cx.flow.diagnostic(at(e.offset), e.message).with_help(
                "a topic template is text with `{{ jmespath }}` holes, e.g. \"orders/{{region}}/created\"",
            )
        })?;
        if let Some(offset) = wildcard_outside_holes(text) {
            return Err(cx
                .flow
                .diagnostic(
                    at(offset),
                    "a topic to publish to cannot contain the wildcards `+` or `#`",
                )
                .with_help("wildcards belong in a trigger's topic filters; write a concrete topic such as \"sensors/{{id}}/temperature\""));
        }
        if topic.is_literal() && text.is_empty() {
            return Err(cx.diagnostic(&config.topic, "the `topic` is empty"));
        }
        let prefix = match &config.client_id {
            Some(id) => id.value.to_string(),
            None => format!("sluice-{}-pub", cx.flow.name),
        };
        // Two clients with one id take the connection from each other; the suffix keeps
        // every process and sink apart.
        let random = uuid::Uuid::now_v7().simple().to_string();
        let client_id = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            &random[random.len() - 8..]
        );
        Ok(MqttSink {
            endpoint,
            client_id,
            topic,
            qos: super::qos(config.qos),
            retain: config.retain,
            timeout: config.timeout.0,
            format: config.format,
            live: tokio::sync::Mutex::new(None),
        })
    }

    fn render_topic(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        let topic = self
            .topic
            .render(&mut out.payload, &out.meta)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, format!("topic: {e}")))?;
        super::check_topic(&topic).map_err(|(_, why)| {
            FlowError::permanent(ErrorKind::Sink, format!("topic `{topic}`: {why}"))
        })?;
        Ok(topic)
    }

    /// Opens a connection (a clean session: a publisher keeps nothing between connections)
    /// and waits for the broker's CONNACK.
    async fn open(&self) -> Result<Live, MqttError> {
        let options = self
            .endpoint
            .options(&self.client_id, Duration::from_secs(30), true);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let waiters = Arc::new(Waiters::default());
        waiters.open.store(true, Ordering::Release);
        let (connected_tx, connected) = oneshot::channel();
        let poller = {
            let waiters = waiters.clone();
            tokio::spawn(async move {
                let mut connected_tx = Some(connected_tx);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Outgoing(Sent::Publish(pkid))) => waiters.sent(pkid),
                        Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                            waiters.acknowledged(ack.pkid)
                        }
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            if let Some(tx) = connected_tx.take() {
                                let _ = tx.send(Ok(()));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let why = MqttError::Connection(Arc::new(e));
                            waiters.fail_all(&why);
                            if let Some(tx) = connected_tx.take() {
                                let _ = tx.send(Err(why));
                            }
                            return;
                        }
                    }
                }
            })
        };
        let live = Live {
            client,
            waiters,
            poller,
        };
        match tokio::time::timeout(CONNACK_WITHIN, connected).await {
            Ok(Ok(Ok(()))) => Ok(live),
            Ok(Ok(Err(why))) => Err(why),
            Ok(Err(_)) => Err(MqttError::ClosedWhileConnecting),
            Err(_) => Err(MqttError::NoConnAckWithin(CONNACK_WITHIN)),
        }
    }

    /// Queues the publish on the open connection (opening one when needed) and returns the
    /// receiver of its confirmation.
    async fn queue(
        &self,
        topic: String,
        body: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<(), MqttError>>, FlowError> {
        let mut live = self.live.lock().await;
        let reuse = live
            .as_ref()
            .is_some_and(|l| l.waiters.open.load(Ordering::Acquire));
        let current = match &mut *live {
            Some(current) if reuse => current,
            slot => {
                *slot = None;
                let opened = self
                    .open()
                    .await
                    // Retryable: the broker may be back by the next attempt.
                    .map_err(|why| FlowError::new(ErrorKind::Sink, why.to_string()))?;
                slot.insert(opened)
            }
        };
        let (tx, rx) = oneshot::channel();
        current.waiters.lock().queued.push_back((self.qos, tx));
        if let Err(e) = current
            .client
            .publish(topic, self.qos, self.retain, body)
            .await
        {
            // The event loop is gone; its waiters (this one included) fail with it.
            current.waiters.fail_all(&MqttError::Publish(Arc::new(e)));
            *live = None;
        }
        Ok(rx)
    }
}

/// The byte offset of a `+` or `#` in the literal text of a template (outside `{{ }}`).
fn wildcard_outside_holes(text: &str) -> Option<usize> {
    let mut in_hole = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !in_hole && text[i..].starts_with("{{") {
            in_hole = true;
            i += 2;
            continue;
        }
        if in_hole && text[i..].starts_with("}}") {
            in_hole = false;
            i += 2;
            continue;
        }
        if !in_hole && matches!(bytes[i], b'+' | b'#') {
            return Some(text[..i].chars().count());
        }
        i += 1;
    }
    None
}

#[async_trait]
impl Sink for MqttSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let topic = self.render_topic(out)?;
        let body = codec::encode(self.format, &mut out.payload)?;
        let confirmed = self.queue(topic, body).await?;
        match tokio::time::timeout(self.timeout, confirmed).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(FlowError::new(ErrorKind::Sink, why.to_string())),
            Ok(Err(_)) => Err(FlowError::new(
                ErrorKind::Sink,
                "mqtt: the connection closed before the broker confirmed",
            )),
            Err(_) => Err(FlowError::new(
                ErrorKind::Timeout,
                format!(
                    "no PUBACK from the broker within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    fn target(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(format!("mqtt topic `{}`", self.render_topic(out)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_found_outside_holes_only() {
        assert_eq!(wildcard_outside_holes("a/{{ x || '#' }}/b"), None);
        assert_eq!(wildcard_outside_holes("a/+/b"), Some(2));
        assert_eq!(wildcard_outside_holes("{{x}}/#"), Some(6));
    }
}
