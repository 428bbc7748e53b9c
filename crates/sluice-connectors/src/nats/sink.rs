//! The `nats` sink: publishes each message to a (templated) subject. With JetStream (the
//! default) a write is confirmed only when the stream's publish ack arrived. With
//! `create_stream:` (and for channels) the stream is made, when missing, before the first
//! publish.

use super::{NatsClients, NatsError};
use crate::codec;
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream;
use async_nats::jetstream::{self, message::PublishMessage};
use async_trait::async_trait;
use sluice_engine::Ids;
use sluice_engine::Template;
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{Diagnostic, MessageFormat, NatsRetention, NatsSinkConfig, NatsStorage, Span};
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
    /// The stream to make sure of before the first publish (`create_stream:`, channels).
    ensure_stream: Option<stream::Config>,
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
        let ensure_stream = match &config.create_stream {
            Some(create) => Some(stream_config(config, create, subject.is_literal(), cx)?),
            None => None,
        };
        Ok(NatsSink {
            clients,
            url: config.url.value.to_string(),
            subject,
            jetstream: config.jetstream,
            timeout: config.timeout.0,
            format: config.format,
            ensure_stream,
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
            ensure_stream: Some(stream::Config {
                name: stream.to_owned(),
                subjects: vec![subject.to_owned()],
                ..Default::default()
            }),
            stream_ready: tokio::sync::OnceCell::new(),
            client: tokio::sync::OnceCell::new(),
        })
    }

    /// A failed publish; when no stream captures the subject, says how to create one.
    /// Retryable either way: a stream may be created in the meantime.
    fn publish_error(
        &self,
        subject: &str,
        what: &str,
        e: &async_nats::jetstream::context::PublishError,
    ) -> FlowError {
        if e.kind() != PublishErrorKind::StreamNotFound {
            return FlowError::new(ErrorKind::Sink, format!("{what}: {e}"));
        }
        let hint = match &self.ensure_stream {
            Some(config) => format!(
                "stream `{}` exists but does not capture it: add the subject to its `subjects`",
                config.name
            ),
            None => format!(
                "to create one, add to the sink: `create_stream: {{ name: STREAM, subjects: [\"{subject}\"] }}` (or `jetstream: false` for core NATS)"
            ),
        };
        FlowError::new(
            ErrorKind::Sink,
            format!("{what}: no JetStream stream captures subject `{subject}`; {hint}"),
        )
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
        if let Some(config) = &self.ensure_stream {
            // Idempotent: an existing stream is used as it is, whatever its settings.
            self.stream_ready
                .get_or_try_init(|| async {
                    js.get_or_create_stream(config.clone())
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            FlowError::new(
                                ErrorKind::Sink,
                                format!("stream `{}`: {e}", config.name),
                            )
                        })
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
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| self.publish_error(&subject, "nats publish", &e))?;
        match tokio::time::timeout(self.timeout, ack).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.publish_error(&subject, "nats publish not acknowledged", &e)),
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

/// The stream `create_stream:` asks for, checked at load.
fn stream_config(
    config: &NatsSinkConfig,
    create: &sluice_flow::Spanned<sluice_flow::NatsCreateStream>,
    literal_subject: bool,
    cx: &BuildContext<'_>,
) -> Result<stream::Config, Diagnostic> {
    let create = &create.value;
    if !config.jetstream {
        return Err(cx
            .diagnostic(
                &create.name,
                "`create_stream` needs JetStream, but the sink says `jetstream: false`",
            )
            .with_help(
                "remove `jetstream: false`, or remove `create_stream` to publish with core NATS",
            ));
    }
    let name = create.name.value.to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(cx
            .diagnostic(&create.name, format!("`{name}` is not a stream name"))
            .with_help("use letters, digits, `-` and `_`, e.g. `name: ORDERS`"));
    }
    let mut subjects: Vec<String> = create
        .subjects
        .iter()
        .map(|s| s.value.to_string())
        .collect();
    if subjects.is_empty() {
        if !literal_subject {
            return Err(cx
                .diagnostic(&create.name, "the sink's subject is a template, so `create_stream` needs `subjects`")
                .with_help("list the subjects the stream captures, with wildcards: `subjects: [\"orders.>\"]`"));
        }
        subjects.push(config.subject.value.to_string());
    }
    if let Some(blank) = create.subjects.iter().find(|s| s.value.trim().is_empty()) {
        return Err(cx.diagnostic(blank, "a stream subject is empty"));
    }
    Ok(stream::Config {
        name,
        subjects,
        retention: match create.retention {
            NatsRetention::Limits => stream::RetentionPolicy::Limits,
            NatsRetention::Interest => stream::RetentionPolicy::Interest,
            NatsRetention::Workqueue => stream::RetentionPolicy::WorkQueue,
        },
        storage: match create.storage {
            NatsStorage::File => stream::StorageType::File,
            NatsStorage::Memory => stream::StorageType::Memory,
        },
        max_age: create.max_age.map(|d| d.0).unwrap_or_default(),
        ..Default::default()
    })
}
