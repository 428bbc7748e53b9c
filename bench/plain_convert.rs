//! How the plain-program floors (`cargo bench --bench pipeline`'s plain loop, the
//! `http_floor` example) move values between serde_json, JMESPath and Rhai: by hand, the
//! plain way. The workspace's serde_json keeps a number's text (`arbitrary_precision`) and so
//! serializes a number as a private map, which `rhai::serde` and `ToJmespath` would pass on
//! as a map; `Expression::search` serializes its input too, so `interpret` is used, as the
//! engine does. Included by `#[path]`: a floor must not depend on the engine it is compared
//! with.

#![allow(dead_code)]

use jmespath::{Rcvar, Variable};
use serde_json::{Value, json};

/// `Expression::search` serializes its input (an `Rcvar` too, without the nightly-only
/// `specialized` feature), which turns numbers into maps as above; `interpret` takes the
/// value as it is.
pub fn search(
    expr: &jmespath::Expression<'_>,
    data: &Rcvar,
) -> Result<Rcvar, jmespath::JmespathError> {
    let mut context = jmespath::Context::new(expr.as_str(), &RUNTIME);
    jmespath::interpret(data, expr.as_ast(), &mut context)
}

static RUNTIME: std::sync::LazyLock<jmespath::Runtime> = std::sync::LazyLock::new(|| {
    let mut runtime = jmespath::Runtime::new();
    runtime.register_builtin_functions();
    runtime
});

pub fn to_jmes(value: &Value) -> Rcvar {
    Rcvar::new(match value {
        Value::Null => Variable::Null,
        Value::Bool(b) => Variable::Bool(*b),
        Value::Number(n) => Variable::Number(n.clone()),
        Value::String(s) => Variable::String(s.clone()),
        Value::Array(items) => Variable::Array(items.iter().map(to_jmes).collect()),
        Value::Object(map) => {
            Variable::Object(map.iter().map(|(k, v)| (k.clone(), to_jmes(v))).collect())
        }
    })
}

pub fn from_jmes(value: &Variable) -> Value {
    match value {
        Variable::Null | Variable::Expref(_) => Value::Null,
        Variable::Bool(b) => Value::Bool(*b),
        Variable::Number(n) => Value::Number(n.clone()),
        Variable::String(s) => Value::String(s.clone()),
        Variable::Array(items) => Value::Array(items.iter().map(|v| from_jmes(v)).collect()),
        Variable::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), from_jmes(v))).collect())
        }
    }
}

pub fn to_rhai(value: &Value) -> rhai::Dynamic {
    match value {
        Value::Null => rhai::Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.clone().into(),
        Value::Array(items) => rhai::Dynamic::from_array(items.iter().map(to_rhai).collect()),
        Value::Object(map) => rhai::Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), to_rhai(v)))
                .collect(),
        ),
    }
}

pub fn from_rhai(value: &rhai::Dynamic) -> Value {
    if let Ok(b) = value.as_bool() {
        Value::Bool(b)
    } else if let Ok(i) = value.as_int() {
        json!(i)
    } else if let Ok(f) = value.as_float() {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    } else if let Ok(s) = value.clone().into_string() {
        Value::String(s)
    } else if let Some(items) = value.read_lock::<rhai::Array>() {
        Value::Array(items.iter().map(from_rhai).collect())
    } else if let Some(map) = value.read_lock::<rhai::Map>() {
        Value::Object(
            map.iter()
                .map(|(k, v)| (k.to_string(), from_rhai(v)))
                .collect(),
        )
    } else {
        Value::Null
    }
}
