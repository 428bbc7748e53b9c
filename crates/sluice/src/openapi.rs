//! The OpenAPI 3.1 document of the `http` flows (`sluice openapi`, `GET /api/openapi.json`):
//! one operation per flow, from what the flow file says — route, method, path parameters,
//! authentication, the input contract as the request body, the output contract (or what
//! `reply` steps set) as the answers, and the error answers the listener gives.

use serde_json::{Map, Value, json};
use sluice_engine::CompiledFlow;
use sluice_flow::{FlowStep, HttpMethod, HttpTriggerConfig, Spanned, StepConfig, TriggerConfig};
use std::collections::BTreeSet;

/// The document for `flows` (any order; flows without an `http` trigger are left out).
/// `servers` become the document's `servers`.
pub fn document<'a>(
    flows: impl IntoIterator<Item = &'a CompiledFlow>,
    servers: &[String],
) -> Value {
    let mut flows: Vec<&CompiledFlow> = flows.into_iter().collect();
    flows.sort_by(|a, b| a.name.cmp(&b.name));
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut security_schemes = Map::new();
    schemas.insert("Error".to_owned(), error_schema());
    for flow in flows {
        // The version that runs was parsed from this text; parsing it again gives its model
        // (the compiled flow keeps no copy of it).
        let Ok(loaded) = sluice_flow::parse_flow(&flow.source.path, flow.source.text.to_string())
        else {
            continue;
        };
        let TriggerConfig::Http(http) = &loaded.file.trigger.value else {
            continue;
        };
        let mut components = Components {
            schemas: &mut schemas,
            security_schemes: &mut security_schemes,
        };
        let operation = operation(flow, http, &loaded.file.steps, &mut components);
        let path = http.path.value.to_string();
        let entry = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()));
        entry[http.method.as_str().to_ascii_lowercase()] = operation;
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sluice http flows",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every flow with an `http` trigger, generated from the flow files by `sluice openapi`.",
        },
        "paths": paths,
        "components": { "schemas": schemas },
    });
    if !security_schemes.is_empty() {
        doc["components"]["securitySchemes"] = Value::Object(security_schemes);
    }
    if !servers.is_empty() {
        doc["servers"] = servers.iter().map(|url| json!({ "url": url })).collect();
    }
    doc
}

/// The shared parts the operations refer to.
struct Components<'a> {
    schemas: &'a mut Map<String, Value>,
    security_schemes: &'a mut Map<String, Value>,
}

impl Components<'_> {
    /// Adds a contract's schema under its name (made a valid component name) and returns the
    /// reference to it.
    fn contract(&mut self, contract: &sluice_engine::Contract) -> Value {
        let name: String = contract
            .name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.schemas
            .entry(name.clone())
            .or_insert_with(|| contract.schema().clone());
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }
}

fn operation(
    flow: &CompiledFlow,
    http: &HttpTriggerConfig,
    steps: &[Spanned<FlowStep>],
    components: &mut Components<'_>,
) -> Value {
    let path = http.path.value.to_string();
    let mut op = json!({
        "operationId": flow.name,
        "summary": flow.description.clone().unwrap_or_else(|| format!("flow `{}`", flow.name)),
        "x-sluice-flow": flow.name,
    });
    let parameters: Vec<Value> = path_parameters(&path)
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": { "type": "string" },
                "description": format!("in the flow as meta('http.path.{name}')"),
            })
        })
        .collect();
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    let has_body = !matches!(http.method, HttpMethod::Get | HttpMethod::Delete);
    if has_body {
        let schema = match &flow.input_contract {
            Some(contract) => components.contract(contract),
            None => json!({}),
        };
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": schema } },
        });
    }
    if let Some(auth) = &http.auth {
        let (name, scheme) = security_scheme(&auth.value);
        components
            .security_schemes
            .entry(name.clone())
            .or_insert(scheme);
        op["security"] = json!([{ name: [] }]);
    }

    let found = Found::walk(steps);
    let mut responses = Map::new();
    let success = match &flow.output_contract {
        Some(contract) => components.contract(contract),
        None => json!({}),
    };
    let answer = |description: &str, schema: &Value| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": schema } },
        })
    };
    if !found.top_level_status {
        responses.insert(
            "200".to_owned(),
            answer("the flow's final payload", &success),
        );
    }
    for status in &found.statuses {
        let description = if (200..300).contains(status) {
            "the flow's final payload, with the status a `reply` step set"
        } else {
            "the payload a `reply` step answered with (e.g. in `catch`)"
        };
        let schema = if (200..300).contains(status) {
            success.clone()
        } else {
            json!({})
        };
        responses.insert(status.to_string(), answer(description, &schema));
    }
    if found.filters {
        responses.insert(
            "204".to_owned(),
            json!({ "description": "the message was filtered (`filter`, `dedupe`, `stop: filtered`, …): no body" }),
        );
    }
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let mut errors: Vec<(u16, &str)> = Vec::new();
    if has_body {
        errors.push((400, "the body is not well-formed JSON (kind `trigger`)"));
    }
    if http.auth.is_some() {
        errors.push((401, "missing or wrong credentials (kind `auth`)"));
    }
    if has_body {
        errors.push((
            413,
            "the body is larger than the route's `max_body` (kind `trigger`)",
        ));
        errors.push((415, "the body is not JSON (kind `trigger`)"));
    }
    errors.push((
        422,
        "the payload breaks the input contract (kind `contract`, with `violations`), or the body cannot be represented",
    ));
    errors.push((500, "the flow failed (the error kind)"));
    if found.enriches {
        errors.push((
            502,
            "an `enrich` call failed (kind `enrich`, with `upstream_status`)",
        ));
    }
    errors.push((
        503,
        "the flow is stopping, or the listener is full (kind `trigger`)",
    ));
    errors.push((
        504,
        "the flow did not answer in time, or a downstream call timed out (kind `timeout`, with `outcome`)",
    ));
    for (status, description) in errors {
        // A `reply` that answers this status documents it already.
        responses
            .entry(status.to_string())
            .or_insert_with(|| answer(description, &error));
    }
    op["responses"] = Value::Object(responses);
    op
}

/// The `{name}` segments of a route, in order.
fn path_parameters(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// The security scheme of an `auth:` (its name and object); secrets are never part of it.
fn security_scheme(auth: &sluice_flow::HttpAuth) -> (String, Value) {
    if auth.bearer.is_some() {
        return (
            "bearer".to_owned(),
            json!({ "type": "http", "scheme": "bearer" }),
        );
    }
    if let Some(key) = &auth.api_key {
        let header = key.header.to_string();
        return (
            format!("api_key_{}", component_safe(&header)),
            json!({ "type": "apiKey", "in": "header", "name": header }),
        );
    }
    let (header, prefix, timestamp) = auth
        .hmac
        .as_ref()
        .map(|h| {
            (
                h.header.to_string(),
                h.prefix.to_string(),
                h.timestamp.as_ref().map(|t| t.value.header.to_string()),
            )
        })
        .unwrap_or_default();
    let signed = match &timestamp {
        Some(ts) => {
            format!("`<{ts} header>.<body>`, with the current Unix time in the `{ts}` header")
        }
        None => "the raw body".to_owned(),
    };
    (
        format!("hmac_{}", component_safe(&header)),
        json!({
            "type": "apiKey",
            "in": "header",
            "name": header,
            "description": format!("`{prefix}` followed by the hex HMAC-SHA256 of {signed}, keyed with the shared secret"),
        }),
    )
}

fn component_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What the steps can make the answer be.
#[derive(Default)]
struct Found {
    /// Statuses set by `reply` steps anywhere.
    statuses: BTreeSet<u16>,
    /// A `reply` with a status among the top-level steps: every good answer has it.
    top_level_status: bool,
    /// A step that can end the message filtered.
    filters: bool,
    /// An `enrich` step.
    enriches: bool,
}

impl Found {
    fn walk(steps: &[Spanned<FlowStep>]) -> Found {
        let mut found = Found::default();
        found.visit(steps, true);
        found
    }

    fn visit(&mut self, steps: &[Spanned<FlowStep>], top: bool) {
        for step in steps {
            match &step.value.config {
                StepConfig::Reply(reply) => {
                    if let Some(status) = &reply.status {
                        self.statuses.insert(status.value);
                        self.top_level_status |= top && (200..300).contains(&status.value);
                    }
                }
                StepConfig::Filter(_)
                | StepConfig::Dedupe(_)
                | StepConfig::Call(_)
                | StepConfig::Split(_)
                | StepConfig::Stop(Some(sluice_flow::StopOutcome::Filtered)) => self.filters = true,
                StepConfig::Enrich(_) => self.enriches = true,
                StepConfig::Route(arms) => {
                    for arm in arms {
                        if let Some(nested) = &arm.value.steps {
                            self.visit(nested, false);
                        }
                    }
                }
                StepConfig::Try(nested) | StepConfig::Catch(nested) => self.visit(nested, false),
                _ => {}
            }
        }
    }
}

/// The body of every error answer (docs/http-and-operations.md, "Trigger `http`").
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["kind", "message"],
                "properties": {
                    "kind": {
                        "type": "string",
                        "description": "contract, transform, script, sink, timeout, trigger, throttle, enrich, auth, …",
                    },
                    "message": { "type": "string" },
                    "message_id": { "type": ["string", "null"] },
                    "violations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["pointer", "message"],
                            "properties": {
                                "pointer": { "type": "string", "description": "a JSON pointer into the payload" },
                                "message": { "type": "string" },
                            },
                        },
                    },
                    "upstream_status": { "type": "integer" },
                    "outcome": { "type": "string", "enum": ["not_delivered", "unknown"] },
                },
            },
        },
    })
}
