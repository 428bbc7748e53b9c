use crate::{ByteSize, Dur, Text};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// An HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum HttpMethod {
    /// GET
    #[serde(rename = "GET", alias = "get")]
    Get,
    /// POST
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    /// PUT
    #[serde(rename = "PUT", alias = "put")]
    Put,
    /// PATCH
    #[serde(rename = "PATCH", alias = "patch")]
    Patch,
    /// DELETE
    #[serde(rename = "DELETE", alias = "delete")]
    Delete,
}

impl HttpMethod {
    /// The method as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

impl HttpMethod {
    /// Every method, in the order the schema lists them.
    pub const ALL: [HttpMethod; 5] = [
        HttpMethod::Get,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
    ];
}

/// Hand-written because serde's `alias` (the lower-case spellings) is not seen by the derive.
impl JsonSchema for HttpMethod {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HttpMethod".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<String> = HttpMethod::ALL
            .iter()
            .flat_map(|m| [m.as_str().to_owned(), m.as_str().to_lowercase()])
            .collect();
        schemars::json_schema!({
            "description": "An HTTP method, upper or lower case.",
            "type": "string",
            "enum": names,
        })
    }
}

/// A secret from a flow file (usually `${env:…}`); never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A secret; write it as `${env:NAME}` so it stays out of the file.",
            "type": "string",
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Text::deserialize(deserializer).map(|t| Secret(t.0))
    }
}

/// The `http` trigger: one route on the shared listener, request-reply.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTriggerConfig {
    /// The route, with `{name}` path parameters; starts with `/`.
    #[schemars(with = "Text", regex(pattern = r"^/|\$\{env:"))]
    pub path: Spanned<Text>,
    /// The method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Larger request bodies get 413.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// No answer by then: 504.
    #[serde(default = "default_trigger_timeout")]
    pub timeout: Dur,
    /// Authentication of requests.
    #[schemars(with = "Option<HttpAuth>")]
    pub auth: Option<Spanned<HttpAuth>>,
    /// How an XML body (`Content-Type: application/xml` or `text/xml`) is read: `arrays`
    /// only, since a request is one message.
    #[serde(default)]
    pub xml: crate::XmlReadConfig,
}

/// How requests authenticate: exactly one of the three.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    { "required": ["bearer"] },
    { "required": ["api_key"] },
    { "required": ["hmac"] }
]))]
pub struct HttpAuth {
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<Secret>,
    /// A key in a header.
    pub api_key: Option<ApiKeyAuth>,
    /// An HMAC-SHA256 signature of the raw body (webhooks).
    pub hmac: Option<HmacAuth>,
}

/// An API key in a request header.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// The header name.
    #[serde(default = "default_api_key_header")]
    pub header: Text,
    /// The expected key.
    pub value: Secret,
}

/// An HMAC-SHA256 body signature.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacAuth {
    /// The shared secret.
    pub secret: Secret,
    /// The header carrying the signature.
    #[serde(default = "default_hmac_header")]
    pub header: Text,
    /// Text before the hex digest, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: Text,
    /// A signed timestamp that limits how long a signature can be replayed.
    #[schemars(with = "Option<HmacTimestamp>")]
    pub timestamp: Option<Spanned<HmacTimestamp>>,
}

/// The replay guard of an HMAC signature: the sender puts the current Unix time (seconds) in
/// `header` and signs `<timestamp>.<body>` instead of the body alone, so a captured request
/// is refused once it is older than `tolerance`, and its timestamp cannot be refreshed
/// without the secret.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacTimestamp {
    /// The header carrying the timestamp.
    #[serde(default = "default_timestamp_header")]
    pub header: Text,
    /// How far the timestamp may be from the server's clock, either way.
    #[serde(default = "default_timestamp_tolerance")]
    #[schemars(with = "Dur")]
    pub tolerance: Spanned<Dur>,
}

/// The `schedule` trigger: a message on every tick.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{ "required": ["every"] }, { "required": ["cron"] }]))]
pub struct ScheduleTriggerConfig {
    /// A fixed interval.
    #[schemars(with = "Option<Dur>")]
    pub every: Option<Spanned<Dur>>,
    /// A cron expression (seconds first), UTC.
    #[schemars(with = "Option<Text>")]
    pub cron: Option<Spanned<Text>>,
    /// The payload of each message (default `{}`).
    pub payload: Option<serde_json::Value>,
}

/// The `http` sink: sends each payload as JSON.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// URL template.
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// The method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Header templates.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Text>")]
    pub headers: BTreeMap<String, Spanned<Text>>,
    /// A slower answer is a `timeout` error.
    #[serde(default = "default_client_timeout")]
    pub timeout: Dur,
}

/// The `reply` step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyConfig {
    /// The response status, 100 to 599 (default 200).
    #[schemars(with = "Option<u16>", range(min = 100, max = 599))]
    pub status: Option<Spanned<u16>>,
    /// Response header templates.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Text>")]
    pub headers: BTreeMap<String, Spanned<Text>>,
    /// The body's format: `json` or `xml` (`Content-Type: application/xml`). Absent: as an
    /// earlier `reply` set it, else JSON.
    #[serde(default)]
    pub format: Option<ReplyFormat>,
    /// With `format: xml`, the root element's name; the payload is its content. Absent: the
    /// payload must be an object of one key, the root's name.
    #[schemars(with = "Option<Text>")]
    pub root: Option<Spanned<Text>>,
}

/// The body format of a request-reply answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplyFormat {
    /// JSON (`application/json`).
    #[default]
    Json,
    /// XML by the XML convention (`application/xml`).
    Xml,
}

/// The `enrich` step: call an HTTP endpoint and merge its JSON answer into the payload.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// URL template.
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// The method (default GET).
    #[serde(default = "default_get")]
    pub method: HttpMethod,
    /// JMESPath for the JSON request body.
    #[schemars(with = "Option<Text>")]
    pub body: Option<Spanned<Text>>,
    /// JMESPath per query parameter.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Text>")]
    pub query: BTreeMap<String, Spanned<Text>>,
    /// Header templates.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Text>")]
    pub headers: BTreeMap<String, Spanned<Text>>,
    /// A slower answer is a `timeout` error.
    #[serde(default = "default_client_timeout")]
    pub timeout: Dur,
    /// The payload field that receives the response.
    #[schemars(with = "Text")]
    pub into: Spanned<Text>,
}

fn default_max_body() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_trigger_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_client_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_api_key_header() -> Text {
    Text::from("x-api-key")
}
fn default_hmac_header() -> Text {
    Text::from("x-signature")
}
fn default_timestamp_header() -> Text {
    Text::from("x-signature-timestamp")
}
fn default_timestamp_tolerance() -> Spanned<Dur> {
    super::trigger::unspanned(Dur(Duration::from_secs(300)))
}
fn default_get() -> HttpMethod {
    HttpMethod::Get
}
