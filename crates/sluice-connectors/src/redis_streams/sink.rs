//! The `redis` sink: `XADD` of one entry per message (fields: the body, `message_id`,
//! `correlation_id`), optionally trimming the stream with `MAXLEN ~`.

use super::{CORRELATION_ID_FIELD, MESSAGE_ID_FIELD};
use crate::codec;
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use sluice_engine::Ids;
use sluice_engine::Template;
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{Diagnostic, MessageFormat, RedisSinkConfig, Span};

/// Appends to a Redis Stream.
pub struct RedisSink {
    url: String,
    tls: Option<redis::TlsCertificates>,
    stream: Template,
    maxlen: Option<usize>,
    field: String,
    format: MessageFormat,
    conn: tokio::sync::OnceCell<ConnectionManager>,
}

impl RedisSink {
    /// Builds the sink, compiling its stream-key template; nothing is opened yet.
    pub fn new(config: &RedisSinkConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let stream = Template::compile(config.stream.value.as_str()).map_err(|e| {
            let span = sluice_flow::diagnostic::position_in_scalar(
                &cx.flow.source,
                Span::of(&config.stream),
                0,
                e.offset,
            );
            cx.flow.diagnostic(span, e.message).with_help(
                "a stream template is text with `{{ jmespath }}` holes, e.g. \"orders:{{region}}\"",
            )
        })?;
        if stream.is_literal() && config.stream.value.is_empty() {
            return Err(cx.diagnostic(&config.stream, "the `stream` is empty"));
        }
        Ok(RedisSink {
            url: config.url.value.to_string(),
            tls: super::load_tls(&config.url, config.tls.as_deref(), cx)?,
            stream,
            maxlen: config.maxlen,
            field: config.field.to_string(),
            format: config.format,
            conn: tokio::sync::OnceCell::new(),
        })
    }

    fn render_stream(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        let key = self
            .stream
            .render(&mut out.payload, &out.meta)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, format!("stream key: {e}")))?;
        if key.is_empty() {
            return Err(FlowError::permanent(
                ErrorKind::Sink,
                "the stream key is empty",
            ));
        }
        Ok(key)
    }
}

#[async_trait]
impl Sink for RedisSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let key = self.render_stream(out)?;
        let body = codec::encode(self.format, &mut out.payload)?;
        let conn = self
            .conn
            .get_or_try_init(|| async {
                // A URL the client cannot read stays unreadable: no retry.
                let client = super::client(&self.url, self.tls.as_ref())
                    .map_err(|e| FlowError::permanent(ErrorKind::Sink, e.to_string()))?;
                super::manager(client, &self.url)
                    .await
                    .map_err(|e| FlowError::new(ErrorKind::Sink, e.to_string()))
            })
            .await?;
        let mut conn = conn.clone();
        let mut add = redis::cmd("XADD");
        add.arg(&key);
        if let Some(maxlen) = self.maxlen {
            add.arg("MAXLEN").arg("~").arg(maxlen);
        }
        add.arg("*")
            .arg(&self.field)
            .arg(body)
            .arg(MESSAGE_ID_FIELD)
            .arg(out.meta.message_id())
            .arg(CORRELATION_ID_FIELD)
            .arg(out.meta.correlation());
        add.query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| FlowError::new(ErrorKind::Sink, format!("redis XADD: {e}")))
    }

    fn target(&self, out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(format!("redis stream {}", self.render_stream(out)?))
    }
}
