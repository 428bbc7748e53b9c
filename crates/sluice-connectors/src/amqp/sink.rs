//! The `amqp` sink: publishes each message (persistent) to an exchange with a templated
//! routing key and waits for the broker's publisher confirm. An unroutable message (returned
//! by the broker) is a retryable error: a queue may be bound in the meantime.

use crate::codec;
use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use sluice_engine::Ids;
use sluice_engine::Template;
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{AmqpSinkConfig, Diagnostic, MessageFormat, Span};
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
    open: tokio::sync::Mutex<Option<Open>>,
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
        Ok(AmqpSink {
            url: config.url.value.to_string(),
            exchange: config.exchange.to_string(),
            routing_key,
            timeout: config.timeout.0,
            format: config.format,
            open: tokio::sync::Mutex::new(None),
        })
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
        if self.format == MessageFormat::Json {
            properties = properties.with_content_type("application/json".into());
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
                Ok(Confirmation::Ack(Some(_))) => Err(FlowError::new(
                    ErrorKind::Sink,
                    format!(
                        "amqp: no queue is bound to exchange `{}` for routing key `{key}` (message returned)",
                        self.exchange
                    ),
                )),
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
