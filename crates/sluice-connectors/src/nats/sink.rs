//! The `nats` sink: publishes each message to a (templated) subject. With JetStream (the
//! default) a write is confirmed only when the stream's publish ack arrived.

use super::{NatsClients, NatsError};
use crate::codec;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use async_trait::async_trait;
use sluice_engine::Ids;
use sluice_engine::Template;
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{Diagnostic, MessageFormat, NatsSinkConfig, Span};
use std::time::Duration;

/// The header carrying the sluice message id (the consuming side keeps it as `message_id`).
pub const MESSAGE_ID_HEADER: &str = "Sluice-Message-Id";
/// The header carrying the correlation id of the message's conversation.
pub const CORRELATION_ID_HEADER: &str = "Sluice-Correlation-Id";

/// Publishes to NATS.
pub struct NatsSink {
    clients: NatsClients,
    url: String,
    subject: Template,
    jetstream: bool,
    timeout: Duration,
    format: MessageFormat,
    /// For channels: the stream to make sure of before the first publish.
    ensure_stream: Option<String>,
    stream_ready: tokio::sync::OnceCell<()>,
    /// The connection, looked up once: the shared client reconnects by itself.
    client: tokio::sync::OnceCell<(async_nats::Client, jetstream::Context)>,
}

impl NatsSink {
    /// Builds the sink, compiling its subject template; nothing is opened yet.
    pub fn new(
        config: &NatsSinkConfig,
        clients: NatsClients,
        cx: &BuildContext<'_>,
    ) -> Result<Self, Diagnostic> {
        let subject = Template::compile(config.subject.value.as_str()).map_err(|e| {
            let span = sluice_flow::diagnostic::position_in_scalar(
                &cx.flow.source,
                Span::of(&config.subject),
                0,
                e.offset,
            );
            cx.flow.diagnostic(span, e.message).with_help(
                "a subject template is text with `{{ jmespath }}` holes, e.g. \"orders.{{region}}\"",
            )
        })?;
        if subject.is_literal() && config.subject.value.trim().is_empty() {
            return Err(cx.diagnostic(&config.subject, "the `subject` is empty"));
        }
        Ok(NatsSink {
            clients,
            url: config.url.value.to_string(),
            subject,
            jetstream: config.jetstream,
            timeout: config.timeout.0,
            format: config.format,
            ensure_stream: None,
            stream_ready: tokio::sync::OnceCell::new(),
            client: tokio::sync::OnceCell::new(),
        })
    }

    /// A JetStream sink for a channel: publishes to `subject`, creating `stream` if needed.
    pub(crate) fn for_channel(
        clients: NatsClients,
        url: &str,
        subject: &str,
        stream: &str,
        timeout: Duration,
    ) -> Result<Self, NatsError> {
        let compiled = Template::compile(subject).map_err(|e| NatsError::Subject {
            subject: subject.to_owned(),
            message: e.message,
        })?;
        Ok(NatsSink {
            clients,
            url: url.to_owned(),
            subject: compiled,
            jetstream: true,
            timeout,
            format: MessageFormat::Json,
            ensure_stream: Some(stream.to_owned()),
            stream_ready: tokio::sync::OnceCell::new(),
            client: tokio::sync::OnceCell::new(),
        })
    }

    fn render_subject(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        let subject = self
            .subject
            .render(&mut out.payload, &out.meta)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, format!("subject: {e}")))?;
        if subject.is_empty() || subject.contains(char::is_whitespace) {
            return Err(FlowError::permanent(
                ErrorKind::Sink,
                format!("refusing subject `{}`", subject.escape_debug()),
            ));
        }
        Ok(subject)
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let subject = self.render_subject(out)?;
        let body = codec::encode(self.format, &mut out.payload)?;
        let message_id = out.meta.message_id().to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_ID_HEADER, message_id.as_str());
        headers.insert(CORRELATION_ID_HEADER, out.meta.correlation());
        let (client, js) = self
            .client
            .get_or_try_init(|| async {
                let client = self.clients.get(&self.url).await?;
                let mut js = jetstream::new(client.clone());
                js.set_timeout(self.timeout);
                Ok::<_, NatsError>((client, js))
            })
            .await
            // Retryable: the server may be back by the next attempt.
            .map_err(|e| FlowError::new(ErrorKind::Sink, e.to_string()))?;
        if !self.jetstream {
            return client
                .publish_with_headers(subject, headers, body.into())
                .await
                .map_err(|e| FlowError::new(ErrorKind::Sink, format!("nats publish: {e}")));
        }
        if let Some(stream) = &self.ensure_stream {
            self.stream_ready
                .get_or_try_init(|| async {
                    js.get_or_create_stream(jetstream::stream::Config {
                        name: stream.clone(),
                        subjects: vec![subject.clone()],
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| FlowError::new(ErrorKind::Sink, format!("stream `{stream}`: {e}")))
                })
                .await?;
        }
        // JetStream drops a second publish with the same `Nats-Msg-Id` within its duplicate
        // window: a redelivered message published again after a crash is not duplicated.
        // The subject is part of the id so that a multicast to two subjects is not taken
        // for a duplicate.
        let publish = PublishMessage::build()
            .payload(body.into())
            .headers(headers)
            .message_id(format!("{message_id}@{subject}"));
        let ack = js
            .send_publish(subject, publish)
            .await
            .map_err(|e| FlowError::new(ErrorKind::Sink, format!("nats publish: {e}")))?;
        match tokio::time::timeout(self.timeout, ack).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(FlowError::new(
                ErrorKind::Sink,
                format!("nats publish not acknowledged: {e}"),
            )),
            Err(_) => Err(FlowError::new(
                ErrorKind::Timeout,
                format!(
                    "no JetStream publish ack within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    fn target(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(format!("nats {}", self.render_subject(out)?))
    }
}
