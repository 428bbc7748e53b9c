//! How the plain-program floors (the pipeline bench's plain loop, the `http_floor` and
//! `drain_floor` examples) move values between serde_json, JMESPath and Rhai: by direct walks.
//! The workspace's serde_json keeps a number's text (`arbitrary_precision`) and so serializes
//! a number as a private map, which `rhai::serde` and `ToJmespath` would pass on as a map, and
//! `Expression::search` serializes its input too, so `interpret` is used, as the engine does.
//! Included by `#[path]`: a floor must not depend on the engine it is compared with.

#![allow(dead_code)]

use jmespath::{Rcvar, Variable};
use rhai::Dynamic;
use serde_json::{Map, Number, Value};

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
