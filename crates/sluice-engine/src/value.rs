//! Direct conversions between the three payload forms: `serde_json::Value` (the edges and
//! contracts), JMESPath's `Variable` (expressions) and Rhai's `Dynamic` (scripts).
//!
//! Going through serde for these costs more than the steps themselves, so each pair has a
//! hand-written walk.

use jmespath::{Rcvar, Variable};
use rhai::Dynamic;
use serde_json::{Map, Number, Value};

/// JSON → JMESPath.
pub fn json_to_jmes(value: &Value) -> Rcvar {
    Rcvar::new(json_to_variable(value))
}

fn json_to_variable(value: &Value) -> Variable {
    match value {
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
    }
}

/// JMESPath → JSON. Expression references (`&expr`), which cannot leave an expression, become null.
pub fn jmes_to_json(value: &Variable) -> Value {
    match value {
        Variable::Null | Variable::Expref(_) => Value::Null,
        Variable::Bool(b) => Value::Bool(*b),
        Variable::Number(n) => Value::Number(n.clone()),
        Variable::String(s) => Value::String(s.clone()),
        Variable::Array(items) => Value::Array(items.iter().map(|v| jmes_to_json(v)).collect()),
        Variable::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), jmes_to_json(v)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

/// JSON → Rhai.
pub fn json_to_rhai(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => number_to_rhai(n),
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(items) => Dynamic::from_array(items.iter().map(json_to_rhai).collect()),
        Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), json_to_rhai(v)))
                .collect(),
        ),
    }
}

/// JMESPath → Rhai.
pub fn jmes_to_rhai(value: &Variable) -> Dynamic {
    match value {
        Variable::Null | Variable::Expref(_) => Dynamic::UNIT,
        Variable::Bool(b) => Dynamic::from_bool(*b),
        Variable::Number(n) => number_to_rhai(n),
        Variable::String(s) => Dynamic::from(s.clone()),
        Variable::Array(items) => {
            Dynamic::from_array(items.iter().map(|v| jmes_to_rhai(v)).collect())
        }
        Variable::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), jmes_to_rhai(v)))
                .collect(),
        ),
    }
}

fn number_to_rhai(n: &Number) -> Dynamic {
    match n.as_i64() {
        Some(i) => Dynamic::from_int(i),
        None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// Rhai → JSON. Values JSON cannot hold (functions, timestamps, NaN) are an error naming them.
pub fn rhai_to_json(value: &Dynamic) -> Result<Value, String> {
    Ok(if value.is_unit() {
        Value::Null
    } else if let Ok(b) = value.as_bool() {
        Value::Bool(b)
    } else if let Ok(i) = value.as_int() {
        Value::Number(i.into())
    } else if let Ok(f) = value.as_float() {
        Value::Number(
            Number::from_f64(f)
                .ok_or_else(|| format!("the number {f} cannot be written as JSON"))?,
        )
    } else if value.is_string() {
        Value::String(value.clone().into_string().unwrap_or_default())
    } else if let Ok(c) = value.as_char() {
        Value::String(c.to_string())
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
    } else if value.is_blob() {
        let blob = value.read_lock::<rhai::Blob>().ok_or("blob is locked")?;
        Value::Array(blob.iter().map(|b| Value::Number((*b).into())).collect())
    } else {
        return Err(format!(
            "a script produced a value of type `{}`, which has no JSON form",
            value.type_name()
        ));
    })
}

/// Rhai → JMESPath.
pub fn rhai_to_jmes(value: &Dynamic) -> Result<Rcvar, String> {
    Ok(Rcvar::new(if value.is_unit() {
        Variable::Null
    } else if let Ok(b) = value.as_bool() {
        Variable::Bool(b)
    } else if let Ok(i) = value.as_int() {
        Variable::Number(i.into())
    } else if let Ok(f) = value.as_float() {
        Variable::Number(
            Number::from_f64(f)
                .ok_or_else(|| format!("the number {f} cannot be written as JSON"))?,
        )
    } else if value.is_string() {
        Variable::String(value.clone().into_string().unwrap_or_default())
    } else if let Ok(c) = value.as_char() {
        Variable::String(c.to_string())
    } else if value.is_array() {
        let array = value.read_lock::<rhai::Array>().ok_or("array is locked")?;
        Variable::Array(array.iter().map(rhai_to_jmes).collect::<Result<_, _>>()?)
    } else if value.is_map() {
        let map = value.read_lock::<rhai::Map>().ok_or("map is locked")?;
        Variable::Object(
            map.iter()
                .map(|(k, v)| Ok((k.to_string(), rhai_to_jmes(v)?)))
                .collect::<Result<_, String>>()?,
        )
    } else {
        return rhai_to_json(value).map(|v| json_to_jmes(&v));
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_every_form() {
        let original = json!({"id": "o-1", "n": 2, "price": 9.5, "ok": true, "none": null,
                              "lines": [{"sku": "A", "qty": 3}], "empty": {}});
        let jmes = json_to_jmes(&original);
        assert_eq!(jmes_to_json(&jmes), original);
        let rhai = jmes_to_rhai(&jmes);
        assert_eq!(rhai_to_json(&rhai).unwrap(), original);
        assert_eq!(jmes_to_json(&rhai_to_jmes(&rhai).unwrap()), original);
        assert_eq!(rhai_to_json(&json_to_rhai(&original)).unwrap(), original);
    }

    #[test]
    fn integers_stay_integers() {
        let rhai = json_to_rhai(&json!(3));
        assert!(rhai.is_int());
        assert_eq!(rhai_to_json(&Dynamic::from_float(1.5)).unwrap(), json!(1.5));
    }
}
