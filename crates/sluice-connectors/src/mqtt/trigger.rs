//! The `mqtt` trigger: subscribes to topic filters in a persistent session and acknowledges
//! (PUBACK) each QoS 1 message after the flow's sinks or its dead letter confirmed.
//!
//! MQTT has no "negative acknowledgement": a broker sends an unacknowledged message again
//! only when the session is resumed. So after a failure that was not dead-lettered the
//! trigger pauses `redeliver_delay`, lets the other messages in flight settle, and resumes
//! the session. Each connection is its own [`Connection`]: an acknowledgement that belongs to
//! an older one is skipped (the broker has sent that message again already), because packet
//! ids are only meaningful within the connection that received them.

use super::{Endpoint, MqttError};
use crate::codec::{self, consume_reconnecting};
use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, Incoming, Outgoing as Sent, Publish, QoS, SubscribeReasonCode};
use sluice_engine::{Acker, BuildContext, Envelope, Inlet, Message, Meta, Outcome, Trigger};
use sluice_flow::{Diagnostic, MessageFormat, MqttTriggerConfig, Span};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// QoS 0 messages waiting for room in the flow's queue beyond this many are dropped (QoS 0
/// is at-most-once by definition); QoS 1 messages are bounded by the broker's in-flight window.
const MAX_WAITING_QOS0: usize = 10_000;
/// How long a connection waits for its messages in flight to settle before it is closed.
const SETTLE: Duration = Duration::from_secs(10);

/// Subscribes to MQTT topic filters.
pub struct MqttTrigger {
    endpoint: Endpoint,
    topics: Vec<String>,
    client_id: String,
    clean_session: bool,
    qos: QoS,
    keep_alive: Duration,
    redeliver_delay: Duration,
    format: MessageFormat,
}

/// How one connection ended.
enum Ended {
    /// The flow is stopping.
    Stopped,
    /// A failed message needs the broker to send it again: resume the session.
    Redeliver,
}

impl MqttTrigger {
    /// Builds the trigger, checking the URL and every topic filter at its position.
    pub fn new(config: &MqttTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let endpoint = Endpoint::load(&config.url, config.tls.as_deref(), cx)?;
        if config.topics.value.is_empty() {
            return Err(cx
                .diagnostic(&config.topics, "`topics` is empty")
                .with_help(
                    "list one or more topic filters, e.g. topics: [\"sensors/+/temperature\"]",
                ));
        }
        let mut topics = Vec::new();
        for topic in &config.topics.value {
            if let Err((offset, why)) = super::check_filter(&topic.value) {
                let column = topic.value[..offset].chars().count();
                let span = sluice_flow::diagnostic::position_in_scalar(
                    &cx.flow.source,
                    Span::of(topic),
                    0,
                    column,
                );
                return Err(cx.flow.diagnostic(span, why).with_help(
                    "a topic filter is levels separated by `/`; `+` stands for one level, a final `#` for the rest",
                ));
            }
            topics.push(topic.value.to_string());
        }
        let keep_alive = super::keep_alive(config.keep_alive.value).ok_or_else(|| {
            cx.diagnostic(
                &config.keep_alive,
                "`keep_alive` must be a whole number of seconds, at most 65535s",
            )
            .with_help("e.g. keep_alive: 30s (0s turns keep-alive pings off)")
        })?;
        let client_id = match &config.client_id {
            Some(id) => {
                if id.value.is_empty() || id.value.len() > usize::from(u16::MAX) {
                    return Err(cx
                        .diagnostic(id, "the `client_id` must be 1 to 65,535 bytes long")
                        .with_help("keep it stable: the broker keeps the session under this id"));
                }
                id.value.to_string()
            }
            None => format!("sluice-{}", cx.flow.name),
        };
        Ok(MqttTrigger {
            endpoint,
            topics,
            client_id,
            clean_session: config.clean_session,
            qos: super::qos(config.qos),
            keep_alive,
            redeliver_delay: config.redeliver_delay.0,
            format: config.format,
        })
    }

    /// Connects, subscribes (in a session the broker did not keep, or on this trigger's first
    /// connection, so changed topics take effect) and feeds messages until the connection
    /// ends.
    async fn session(
        &self,
        inlet: &Inlet,
        stop: &CancellationToken,
        first: &AtomicBool,
    ) -> Result<Ended, MqttError> {
        let options = self
            .endpoint
            .options(&self.client_id, self.keep_alive, self.clean_session);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let connection = Arc::new(Connection {
            client,
            open: AtomicBool::new(true),
            pending_acks: std::sync::Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            redeliver: Notify::new(),
        });

        // The event loop must never be cancelled mid-write, so it runs in a task of its own
        // and reports through channels.
        let (control_tx, mut control) = mpsc::unbounded_channel::<Control>();
        let (publish_tx, publish_rx) = mpsc::unbounded_channel::<Publish>();
        let poller = {
            let connection = connection.clone();
            let flow = inlet.flow().to_owned();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Incoming::Publish(publish))) => {
                            if publish.qos == QoS::AtMostOnce
                                && connection.waiting.load(Ordering::Relaxed) >= MAX_WAITING_QOS0
                            {
                                tracing::warn!(flow = %flow, topic = %publish.topic,
                                    "mqtt: QoS 0 message dropped, {MAX_WAITING_QOS0} already wait for the flow");
                                continue;
                            }
                            connection.waiting.fetch_add(1, Ordering::Relaxed);
                            let _ = publish_tx.send(publish);
                        }
                        Ok(Event::Outgoing(Sent::PubAck(pkid))) => connection.acknowledged(pkid),
                        Ok(Event::Incoming(Incoming::ConnAck(connack))) => {
                            let _ = control_tx.send(Control::Connected(connack.session_present));
                        }
                        Ok(Event::Incoming(Incoming::SubAck(suback))) => {
                            let _ = control_tx.send(Control::Subscribed(suback.return_codes));
                        }
                        Ok(Event::Outgoing(Sent::Disconnect)) => {
                            let _ = control_tx.send(Control::Ended(None));
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = control_tx.send(Control::Ended(Some(e)));
                            break;
                        }
                    }
                }
                connection.close();
            })
        };
        let result = self
            .serve(inlet, stop, first, &connection, &mut control, publish_rx)
            .await;
        connection.close();
        if result.is_ok() {
            // DISCONNECT ends the connection but keeps the session (and its unacknowledged
            // messages) on the broker.
            let _ = connection.client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(event) = control.recv().await {
                    if matches!(event, Control::Ended(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        poller.abort();
        result
    }

    async fn serve(
        &self,
        inlet: &Inlet,
        stop: &CancellationToken,
        first: &AtomicBool,
        connection: &Arc<Connection>,
        control: &mut mpsc::UnboundedReceiver<Control>,
        publishes: mpsc::UnboundedReceiver<Publish>,
    ) -> Result<Ended, MqttError> {
        let session_present = tokio::select! {
            _ = stop.cancelled() => return Ok(Ended::Stopped),
            event = answer(control) => match event? {
                Control::Connected(present) => present,
                _ => return Err(MqttError::NoConnAck),
            },
        };
        if first.load(Ordering::Relaxed) || !session_present {
            let filters = self
                .topics
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), self.qos));
            connection
                .client
                .subscribe_many(filters)
                .await
                .map_err(|e| MqttError::Subscribe(Arc::new(e)))?;
            let codes = tokio::select! {
                _ = stop.cancelled() => return Ok(Ended::Stopped),
                event = answer(control) => match event? {
                    Control::Subscribed(codes) => codes,
                    _ => return Err(MqttError::NoSubAck),
                },
            };
            for (topic, code) in self.topics.iter().zip(codes) {
                if code == SubscribeReasonCode::Failure {
                    return Err(MqttError::SubscriptionRefused(topic.clone()));
                }
            }
            // Only now: a subscription that failed is made again at the next connection.
            first.store(false, Ordering::Relaxed);
        }
        inlet.set_healthy();
        tracing::info!(flow = %inlet.flow(), client_id = %self.client_id, session_present,
            topics = %self.topics.join(", "), "mqtt session ready");

        let forwarder = tokio::spawn(forward(
            publishes,
            inlet.clone(),
            connection.clone(),
            self.format,
            self.redeliver_delay,
            self.clean_session,
        ));
        let ended = tokio::select! {
            _ = stop.cancelled() => Ok(Ended::Stopped),
            _ = connection.redeliver.notified() => Ok(Ended::Redeliver),
            event = async { loop { if let Err(e) = next_event(control).await { break e; } } } => Err(event),
        };
        // Messages not yet in the flow's queue stay unacknowledged: the broker sends them
        // again in the next session.
        forwarder.abort();
        if ended.is_ok() {
            connection.settle(control).await;
        }
        ended
    }
}

/// How long the broker has to answer CONNACK and SUBACK.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// Waits for the broker's answer while connecting (CONNACK, SUBACK).
async fn answer(control: &mut mpsc::UnboundedReceiver<Control>) -> Result<Control, MqttError> {
    match tokio::time::timeout(ANSWER_WITHIN, control.recv()).await {
        Ok(Some(Control::Ended(why))) => Err(ended(why)),
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(MqttError::Closed),
        Err(_) => Err(MqttError::NoAnswer(ANSWER_WITHIN)),
    }
}

/// Waits for the next event of the connection that matters once it is serving: only its end.
async fn next_event(control: &mut mpsc::UnboundedReceiver<Control>) -> Result<(), MqttError> {
    match control.recv().await {
        Some(Control::Ended(why)) => Err(ended(why)),
        Some(_) => Ok(()),
        None => Err(MqttError::Closed),
    }
}

/// The error of a connection that ended, with the client's reason if it gave one.
fn ended(why: Option<rumqttc::ConnectionError>) -> MqttError {
    why.map_or(MqttError::Closed, |e| MqttError::Lost(Arc::new(e)))
}

/// What the event loop tells the trigger.
enum Control {
    Connected(bool),
    Subscribed(Vec<SubscribeReasonCode>),
    Ended(Option<rumqttc::ConnectionError>),
}

/// One connection to the broker, shared by the event loop and the acknowledgements of the
/// messages it received.
struct Connection {
    client: AsyncClient,
    open: AtomicBool,
    /// Acknowledgements handed to the client, by packet id, until they were written.
    pending_acks: std::sync::Mutex<HashMap<u16, oneshot::Sender<()>>>,
    /// Messages given to the flow and not yet settled.
    in_flight: AtomicUsize,
    /// Messages received and not yet queued in the flow (bounds QoS 0 floods).
    waiting: AtomicUsize,
    /// Woken when a failed message needs the session resumed.
    redeliver: Notify,
}

impl Connection {
    fn acknowledged(&self, pkid: u16) {
        let waiter = self.lock_acks().remove(&pkid);
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    fn close(&self) {
        self.open.store(false, Ordering::Release);
        // Dropping the waiters wakes every acknowledgement still waiting.
        self.lock_acks().clear();
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, HashMap<u16, oneshot::Sender<()>>> {
        self.pending_acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the PUBACK of `publish` and waits until it was written to the connection.
    /// Returns false when the connection this message came on is gone.
    async fn ack(&self, publish: &Publish) -> bool {
        if publish.qos == QoS::AtMostOnce {
            return true;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut acks = self.lock_acks();
            if !self.open.load(Ordering::Acquire) {
                return false;
            }
            acks.insert(publish.pkid, tx);
        }
        if self.client.ack(publish).await.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(10), rx).await,
            Ok(Ok(()))
        )
    }

    /// Waits (up to [`SETTLE`]) until every message given to the flow was settled, so their
    /// acknowledgements go out before the connection closes.
    async fn settle(&self, control: &mut mpsc::UnboundedReceiver<Control>) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        while self.in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                event = next_event(control) => if event.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

/// Turns received messages into envelopes and queues them in the flow, in order.
async fn forward(
    mut publishes: mpsc::UnboundedReceiver<Publish>,
    inlet: Inlet,
    connection: Arc<Connection>,
    format: MessageFormat,
    redeliver_delay: Duration,
    clean_session: bool,
) {
    let flow = inlet.flow().to_owned();
    while let Some(mut publish) = publishes.recv().await {
        connection.waiting.fetch_sub(1, Ordering::Relaxed);
        let decoded = codec::decode(format, &publish.payload);
        let mut meta = Meta::new();
        meta.insert("mqtt.qos".to_owned(), (publish.qos as u8).to_string());
        meta.insert("mqtt.retain".to_owned(), publish.retain.to_string());
        meta.insert("mqtt.dup".to_owned(), publish.dup.to_string());
        meta.insert("mqtt.topic".to_owned(), std::mem::take(&mut publish.topic));
        let message = match decoded {
            Ok(payload) => Message::new(&flow, payload, meta),
            Err(why) => Message::undecodable(&flow, &publish.payload, why.to_string(), meta),
        };
        // The body is in the message now; the acknowledgement needs the packet id only.
        publish.payload = Default::default();
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        let envelope = Envelope::new(
            message,
            Box::new(MqttAcker {
                connection: connection.clone(),
                publish,
                redeliver_delay,
                clean_session,
                flow: flow.clone(),
            }),
        );
        if inlet.start(envelope).await.is_err() {
            return;
        }
    }
}

/// Acknowledges one message according to its outcome.
struct MqttAcker {
    connection: Arc<Connection>,
    publish: Publish,
    redeliver_delay: Duration,
    clean_session: bool,
    flow: String,
}

impl Drop for MqttAcker {
    fn drop(&mut self) {
        // Settled, acknowledged or abandoned: either way no longer in flight.
        self.connection.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl Acker for MqttAcker {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        let settled = outcome.settled();
        let message_id = match &outcome {
            Outcome::Failed(failure) => failure.envelope.message_id.as_str(),
            _ => "",
        };
        if !settled && !self.clean_session {
            tracing::info!(flow = %self.flow, message_id = %message_id,
                "message failed; the session is resumed in {} so the broker sends it again",
                humantime::format_duration(self.redeliver_delay));
            tokio::time::sleep(self.redeliver_delay).await;
            self.connection.redeliver.notify_one();
            return;
        }
        if !settled {
            tracing::error!(flow = %self.flow, message_id = %message_id,
                "message failed and is dropped: with `clean_session: true` the broker cannot send it again (configure a dead letter, or use a persistent session)");
        }
        if !self.connection.ack(&self.publish).await {
            tracing::debug!(flow = %self.flow,
                "acknowledgement skipped: the connection the message came on is closed, so the broker sends it again");
        }
    }
}

#[async_trait]
impl Trigger for MqttTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let this = &*self;
        let first = AtomicBool::new(true);
        let (inlet, stop, first) = (&inlet, &stop, &first);
        consume_reconnecting(
            inlet,
            stop,
            &format!("mqtt trigger (client id {})", this.client_id),
            || async move {
                // A redelivery resumes the session at once, without the reconnect backoff.
                while let Ended::Redeliver = this.session(inlet, stop, first).await? {
                    if stop.is_cancelled() {
                        break;
                    }
                }
                Ok::<(), MqttError>(())
            },
        )
        .await;
    }
}
