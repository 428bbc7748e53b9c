//! The `amqp` sink: publishes each message (persistent) to an exchange with a templated
//! routing key and waits for the broker's publisher confirm. An unroutable message (returned
//! by the broker) is a retryable error: a queue may be bound in the meantime. With `declare:`
//! the sink declares its queue (and exchange and binding) on every new channel, so it creates
//! what it writes to.

use crate::codec;
use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use sluice_engine::Ids;
use sluice_engine::Template;
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{AmqpExchangeType, AmqpSinkConfig, Diagnostic, MessageFormat, Span};
use std::time::Duration;

/// The open connection and confirm-mode channel of a sink, re-opened after a failure.
struct Open {
    // Kept so the connection lives as long as its channel.
    _connection: lapin::Connection,
    channel: lapin::Channel,
}

/// Publishes to RabbitMQ with publisher confirms.
pub struct AmqpSink {
    url: String,
    exchange: String,
    routing_key: Template,
    timeout: Duration,
    format: MessageFormat,
    declare: Option<Declare>,
    open: tokio::sync::Mutex<Option<Open>>,
}

/// What the sink declares on every new channel (`declare:`), checked at load.
struct Declare {
    queue: String,
    /// `None` with the default exchange, which routes by queue name without a binding.
    binding: Option<(lapin::ExchangeKind, String)>,
}

impl AmqpSink {
    /// Builds the sink, compiling its routing-key template; nothing is opened yet.
    pub fn new(config: &AmqpSinkConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let routing_key = Template::compile(config.routing_key.value.as_str()).map_err(|e| {
            let span = sluice_flow::diagnostic::position_in_scalar(
                &cx.flow.source,
                Span::of(&config.routing_key),
                0,
                e.offset,
            );
            cx.flow.diagnostic(span, e.message).with_help(
                "a routing key template is text with `{{ jmespath }}` holes, e.g. \"orders.{{region}}\"",
            )
        })?;
        let declare = match &config.declare {
            Some(declare) => Some(declaration(config, declare, &routing_key, cx)?),
            None => None,
        };
        Ok(AmqpSink {
            url: config.url.value.to_string(),
            exchange: config.exchange.to_string(),
            routing_key,
            timeout: config.timeout.0,
            format: config.format,
            declare,
            open: tokio::sync::Mutex::new(None),
        })
    }

    /// Declares the exchange, queue and binding of `declare:` on a new channel. Declaring
    /// what exists with the same settings changes nothing, so this runs after every
    /// reconnect (the broker may have lost a non-replicated queue).
    async fn declare(&self, channel: &lapin::Channel, declare: &Declare) -> Result<(), FlowError> {
        let failed = |what: String, e: lapin::Error| {
            FlowError::new(
                ErrorKind::Sink,
                format!(
                    "amqp declare {what}: {e} (an existing one with other settings must be changed by hand, or named differently in `declare:`)"
                ),
            )
        };
        if let Some((kind, _)) = &declare.binding {
            channel
                .exchange_declare(
                    self.exchange.as_str().into(),
                    kind.clone(),
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| failed(format!("exchange `{}`", self.exchange), e))?;
        }
        channel
            .queue_declare(
                declare.queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| failed(format!("queue `{}`", declare.queue), e))?;
        if let Some((_, key)) = &declare.binding {
            channel
                .queue_bind(
                    declare.queue.as_str().into(),
                    self.exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    failed(
                        format!(
                            "binding of queue `{}` to `{}` with `{key}`",
                            declare.queue, self.exchange
                        ),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    /// What the error of an unroutable message suggests: the `declare:` that would route it.
    fn unroutable(&self, key: &str) -> String {
        let hint = if self.declare.is_some() {
            "the declared binding does not match this routing key: change `binding_key` (for a `topic` exchange, `#` matches every key)".to_owned()
        } else if self.exchange.is_empty() {
            format!("to create the queue, add to the sink: `declare: {{ queue: \"{key}\" }}`")
        } else {
            format!(
                "to create a queue bound to it, add to the sink: `declare: {{ queue: QUEUE, binding_key: \"{key}\" }}`"
            )
        };
        format!(
            "amqp: no queue is bound to exchange `{}` for routing key `{key}` (message returned); {hint}",
            self.exchange
        )
    }

    /// The confirm-mode channel, opened on first use and after a failure.
    async fn channel(&self) -> Result<lapin::Channel, FlowError> {
        let mut open = self.open.lock().await;
        if let Some(current) = open.as_ref()
            && current.channel.status().connected()
        {
            return Ok(current.channel.clone());
        }
        let connection = super::connect(&self.url)
            .await
            // Retryable: the broker may be back by the next attempt.
            .map_err(|e| FlowError::new(ErrorKind::Sink, e.to_string()))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| FlowError::new(ErrorKind::Sink, format!("amqp channel: {e}")))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| FlowError::new(ErrorKind::Sink, format!("amqp confirm.select: {e}")))?;
        if let Some(declare) = &self.declare {
            self.declare(&channel, declare).await?;
        }
        *open = Some(Open {
            _connection: connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    fn render_key(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        let key = self
            .routing_key
            .render(&mut out.payload, &out.meta)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, format!("routing key: {e}")))?;
        if key.len() > 255 {
            return Err(FlowError::permanent(
                ErrorKind::Sink,
                "the routing key is longer than 255 bytes",
            ));
        }
        Ok(key)
    }
}

#[async_trait]
impl Sink for AmqpSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let key = self.render_key(out)?;
        let body = codec::encode(self.format, &mut out.payload)?;
        let message_id = out.meta.message_id().to_owned();
        let mut headers = FieldTable::default();
        headers.insert(
            "sluice-flow".into(),
            AMQPValue::LongString(out.meta.get("flow").cloned().unwrap_or_default().into()),
        );
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.as_str().into())
            .with_correlation_id(out.meta.correlation().into())
            .with_headers(headers);
        match self.format {
            MessageFormat::Json => {
                properties = properties.with_content_type("application/json".into());
            }
            MessageFormat::Xml => {
                properties = properties.with_content_type("application/xml".into());
            }
            MessageFormat::Text | MessageFormat::Bytes => {}
        }
        let channel = self.channel().await?;
        let publish = async {
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    properties,
                )
                .await
                .map_err(|e| FlowError::new(ErrorKind::Sink, format!("amqp publish: {e}")))?;
            match confirm.await {
                Ok(Confirmation::Ack(None)) => Ok(()),
                Ok(Confirmation::Ack(Some(_))) => {
                    Err(FlowError::new(ErrorKind::Sink, self.unroutable(&key)))
                }
                Ok(Confirmation::Nack(_)) => Err(FlowError::new(
                    ErrorKind::Sink,
                    "amqp: the broker refused the message (nack)",
                )),
                Ok(Confirmation::NotRequested) => Err(FlowError::new(
                    ErrorKind::Sink,
                    "amqp: the channel is not in confirm mode",
                )),
                Err(e) => Err(FlowError::new(
                    ErrorKind::Sink,
                    format!("amqp confirm: {e}"),
                )),
            }
        };
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(result) => result,
            Err(_) => Err(FlowError::new(
                ErrorKind::Timeout,
                format!(
                    "no publisher confirm within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    fn target(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(format!(
            "amqp exchange `{}` routing key `{}`",
            self.exchange,
            self.render_key(out)?
        ))
    }
}

/// Checks `declare:` against the exchange and routing key, so that what it declares is what
/// the messages are routed to.
fn declaration(
    config: &AmqpSinkConfig,
    declare: &sluice_flow::Spanned<sluice_flow::AmqpDeclare>,
    routing_key: &Template,
    cx: &BuildContext<'_>,
) -> Result<Declare, Diagnostic> {
    let queue = declare.value.queue.value.to_string();
    if queue.trim().is_empty() || queue.len() > 255 {
        return Err(cx
            .diagnostic(
                &declare.value.queue,
                "the queue name is empty or longer than 255 bytes",
            )
            .with_help("name the durable queue the messages go to, e.g. `queue: orders`"));
    }
    let literal_key = routing_key
        .is_literal()
        .then(|| config.routing_key.value.to_string());
    if config.exchange.is_empty() {
        if let Some(binding) = &declare.value.binding_key {
            return Err(cx
                .diagnostic(binding, "the default exchange (`exchange: \"\"`) routes by queue name and takes no binding")
                .with_help("remove `binding_key`, or name an `exchange` to bind the queue to"));
        }
        if let Some(key) = literal_key.filter(|key| *key != queue) {
            return Err(cx
                .diagnostic(
                    &declare.value.queue,
                    format!("with the default exchange the routing key is the queue name, but the routing key is `{key}`"),
                )
                .with_help(format!("declare `queue: \"{key}\"`, or name an `exchange` and bind the queue with `binding_key`")));
        }
        return Ok(Declare {
            queue,
            binding: None,
        });
    }
    let key = match (&declare.value.binding_key, literal_key) {
        (Some(binding), _) => binding.value.to_string(),
        (None, Some(key)) => key,
        (None, None) => {
            return Err(cx
                .diagnostic(&declare.value.queue, "the routing key is a template, so `declare:` needs a `binding_key`")
                .with_help("add e.g. `binding_key: \"orders.#\"` (a `topic` exchange matches `*` one word, `#` any words)"));
        }
    };
    let kind = match declare.value.exchange_type {
        AmqpExchangeType::Topic => lapin::ExchangeKind::Topic,
        AmqpExchangeType::Direct => lapin::ExchangeKind::Direct,
        AmqpExchangeType::Fanout => lapin::ExchangeKind::Fanout,
        AmqpExchangeType::Headers => lapin::ExchangeKind::Headers,
    };
    Ok(Declare {
        queue,
        binding: Some((kind, key)),
    })
}
