//! What the plain-program floors share: the direct walks between serde_json, JMESPath and Rhai
//! (the pipeline bench's plain loop, the `http_floor` and `drain_floor` examples), and the work
//! of the order-intake flow for one order ([`OrderIntake`], the two examples).
//!
//! The workspace's serde_json keeps a number's text (`arbitrary_precision`) and so serializes a
//! number as a private map, which `rhai::serde` and `ToJmespath` would pass on as a map, and
//! `Expression::search` serializes its input too, so `interpret` is used, as the engine does;
//! jmespath parses a number literal through serde as well, so the filter's `> 0` is compared in
//! Rust. Included by `#[path]`: a floor must not depend on the engine it is compared with.

// Each file that includes this uses a part of it (the pipeline bench only the walks).
#![allow(dead_code)]

use jmespath::{Rcvar, Variable};
use rhai::{Dynamic, Engine, Scope};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Runs an expression on `data` as it is: `Expression::search` would serialize it into a
/// copy first (through serde, which breaks its numbers).
pub fn search(expression: &jmespath::Expression<'static>, data: &Rcvar) -> Result<Rcvar, String> {
    let mut context = jmespath::Context::new(expression.as_str(), &jmespath::DEFAULT_RUNTIME);
    jmespath::interpret(data, expression.as_ast(), &mut context).map_err(|e| e.to_string())
}

pub fn json_to_jmes(value: &Value) -> Rcvar {
    Rcvar::new(match value {
        Value::Null => Variable::Null,
        Value::Bool(b) => Variable::Bool(*b),
        Value::Number(n) => Variable::Number(n.clone()),
        Value::String(s) => Variable::String(s.clone()),
        Value::Array(items) => Variable::Array(items.iter().map(json_to_jmes).collect()),
        Value::Object(map) => Variable::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_jmes(v)))
                .collect(),
        ),
    })
}

pub fn jmes_to_json(value: &Variable) -> Result<Value, String> {
    Ok(match value {
        Variable::Null => Value::Null,
        Variable::Expref(_) => return Err("an expression reference is not data".to_owned()),
        Variable::Bool(b) => Value::Bool(*b),
        Variable::Number(n) => Value::Number(n.clone()),
        Variable::String(s) => Value::String(s.clone()),
        Variable::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| jmes_to_json(v))
                .collect::<Result<_, _>>()?,
        ),
        Variable::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), jmes_to_json(v)?);
            }
            Value::Object(out)
        }
    })
}

pub fn json_to_rhai(value: &Value) -> Result<Dynamic, String> {
    Ok(match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Dynamic::from_int(i),
            (None, Some(f)) => Dynamic::from_float(f),
            _ => return Err(format!("the number {n} does not fit a script")),
        },
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(items) => {
            Dynamic::from_array(items.iter().map(json_to_rhai).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => {
            let mut out = rhai::Map::new();
            for (k, v) in map {
                out.insert(k.as_str().into(), json_to_rhai(v)?);
            }
            Dynamic::from_map(out)
        }
    })
}

pub fn rhai_to_json(value: &Dynamic) -> Result<Value, String> {
    Ok(if value.is_unit() {
        Value::Null
    } else if let Ok(b) = value.as_bool() {
        Value::Bool(b)
    } else if let Ok(i) = value.as_int() {
        Value::Number(i.into())
    } else if let Ok(f) = value.as_float() {
        Value::Number(Number::from_f64(f).ok_or("NaN or infinite")?)
    } else if value.is_string() {
        Value::String(value.clone().into_string()?)
    } else if value.is_array() {
        let array = value.read_lock::<rhai::Array>().ok_or("array is locked")?;
        Value::Array(array.iter().map(rhai_to_json).collect::<Result<_, _>>()?)
    } else if value.is_map() {
        let map = value.read_lock::<rhai::Map>().ok_or("map is locked")?;
        let mut out = Map::with_capacity(map.len());
        for (k, v) in map.iter() {
            out.insert(k.to_string(), rhai_to_json(v)?);
        }
        Value::Object(out)
    } else {
        return Err(format!("no JSON form for a {}", value.type_name()));
    })
}

// The order-intake flow (`flows/order-intake.yaml`) for one order, as sluice runs it.

const TRANSFORM: &str = "{order_id: id, customer: customer, lines: lines, currency: currency}";
/// The flow's filter is `length(lines) > `0``; the comparison with 0 is made in Rust.
const FILTER: &str = "length(lines)";
const WHEN: &str = "priority == 'high'";

/// sluice's defaults for `script_limits`.
const MAX_OPERATIONS: u64 = 1_000_000;
const SCRIPT_DEADLINE: Duration = Duration::from_secs(1);
/// sluice looks at the deadline every 256 Rhai operations.
const DEADLINE_CHECK_EVERY: u64 = 256;

thread_local! {
    // As in sluice: the progress callback is shared, so the deadline of the run on this
    // thread lives in a thread-local.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A Rhai engine with sluice's sandbox settings (limits, no modules, no `eval`, a deadline
/// looked at every 256 operations).
pub fn sandbox() -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(32)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(1 << 20)
        .set_max_array_size(100_000)
        .set_max_map_size(10_000)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.on_progress(|operations| {
        if operations % DEADLINE_CHECK_EVERY != 0 {
            return None;
        }
        match DEADLINE.get() {
            Some(deadline) if Instant::now() >= deadline => Some(Dynamic::from("deadline")),
            _ => None,
        }
    });
    engine
}

/// A JSON Schema validator for a schema file, with a `file://` base URI so that
/// priced-order.v1's `order.v1.json#/$defs/customer` resolves.
pub fn validator(path: &Path) -> Result<jsonschema::Validator, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let schema: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let absolute = std::path::absolute(path).map_err(|e| e.to_string())?;
    jsonschema::options()
        .with_base_uri(format!("file://{}", absolute.display()))
        .build(&schema)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Why an order did not come out.
pub enum Refused {
    /// It breaks the input contract (the violations).
    Input(String),
    /// A step failed: the transform, the script, a conversion.
    Step(String),
    /// The priced order breaks the output contract (the violations).
    Output(String),
}

/// A priced order: the document, its bytes, and where the route sends it.
pub struct Priced {
    pub value: Value,
    pub bytes: Vec<u8>,
    pub express: bool,
}

/// The order-intake flow's steps: input contract, transform, `received_at`, the price script,
/// filter, route, output contract, serialize.
pub struct OrderIntake {
    input: jsonschema::Validator,
    output: jsonschema::Validator,
    transform: jmespath::Expression<'static>,
    filter: jmespath::Expression<'static>,
    when: jmespath::Expression<'static>,
    engine: Engine,
    script: rhai::AST,
}

impl OrderIntake {
    /// The flow's schemas and script from `root` (`schemas/`, `scripts/price.rhai`).
    pub fn load(root: &Path) -> Result<OrderIntake, String> {
        let engine = sandbox();
        let script_path = root.join("scripts/price.rhai");
        let source = std::fs::read_to_string(&script_path)
            .map_err(|e| format!("cannot read {}: {e}", script_path.display()))?;
        let script = engine
            .compile(&source)
            .map_err(|e| format!("{}: {e}", script_path.display()))?;
        let compile = |text: &'static str| jmespath::compile(text).map_err(|e| e.to_string());
        Ok(OrderIntake {
            input: validator(&root.join("schemas/order.v1.json"))?,
            output: validator(&root.join("schemas/priced-order.v1.json"))?,
            transform: compile(TRANSFORM)?,
            filter: compile(FILTER)?,
            when: compile(WHEN)?,
            engine,
            script,
        })
    }

    /// Runs the steps on one order; `meta` is what the script sees in `meta` besides
    /// `received_at`. `Ok(None)`: the filter dropped it.
    pub fn run(&self, order: &Value, meta: &[(&str, &str)]) -> Result<Option<Priced>, Refused> {
        let violations = |validator: &jsonschema::Validator, value: &Value| {
            let found: Vec<String> = validator
                .iter_errors(value)
                .map(|e| e.to_string())
                .collect();
            found.join("; ")
        };
        if !self.input.is_valid(order) {
            return Err(Refused::Input(violations(&self.input, order)));
        }
        let shaped = search(&self.transform, &json_to_jmes(order)).map_err(Refused::Step)?;
        let mut payload = jmes_to_json(&shaped).map_err(Refused::Step)?;
        let received_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if let Value::Object(map) = &mut payload {
            map.insert("received_at".to_owned(), Value::String(received_at.clone()));
        }

        // `payload` mutable and `meta` read-only, as in sluice.
        let mut scope = Scope::new();
        scope.push_dynamic("payload", json_to_rhai(&payload).map_err(Refused::Step)?);
        let mut script_meta = rhai::Map::new();
        for (key, value) in meta {
            script_meta.insert((*key).into(), Dynamic::from((*value).to_owned()));
        }
        script_meta.insert("received_at".into(), Dynamic::from(received_at));
        scope.push_constant("meta", script_meta);
        DEADLINE.set(Some(Instant::now() + SCRIPT_DEADLINE));
        let ran = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, &self.script);
        DEADLINE.set(None);
        let returned = ran.map_err(|e| Refused::Step(e.to_string()))?;
        let result = if returned.is_unit() {
            scope.get_value::<Dynamic>("payload").unwrap_or_default()
        } else {
            returned
        };
        let priced = rhai_to_json(&result).map_err(Refused::Step)?;

        let data = json_to_jmes(&priced);
        let lines = search(&self.filter, &data).map_err(Refused::Step)?;
        if lines.as_number().is_none_or(|n| n <= 0.0) {
            return Ok(None);
        }
        let express = search(&self.when, &data)
            .map_err(Refused::Step)?
            .is_truthy();
        if !self.output.is_valid(&priced) {
            return Err(Refused::Output(violations(&self.output, &priced)));
        }
        let bytes = serde_json::to_vec(&priced).map_err(|e| Refused::Step(e.to_string()))?;
        Ok(Some(Priced {
            value: priced,
            bytes,
            express,
        }))
    }
}
