//! Direct conversions between the three payload forms: `serde_json::Value` (the edges and
//! contracts), JMESPath's `Variable` (expressions) and Rhai's `Dynamic` (scripts).
//!
//! Going through serde for these costs more than the steps themselves, so each pair has a
//! hand-written walk.
//!
//! Numbers: serde_json is built with `arbitrary_precision`, so a `Number` keeps the text it
//! was parsed from and JSON and JMESPath carry every number exactly. Rhai has only `INT` (i64)
//! and `FLOAT` (f64): an integer outside i64 (or a number outside f64's range) becomes a
//! [`BigNumber`], which a script can pass along and compare but not compute with, so it
//! comes back exactly or the script fails saying which field it was (docs/flow-format.md,
//! "Numbers"). No conversion here ever turns a value into null: what has no form is an error.

use jmespath::{Rcvar, Variable};
use rhai::Dynamic;
use serde_json::{Map, Number, Value};

mod jmes_numbers;
pub use jmes_numbers::{ToNumber, repair_literals};

/// JSON → JMESPath (numbers are copied with their exact text).
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

/// JSON → JMESPath, taking the value apart instead of copying its strings.
pub fn json_into_jmes(value: Value) -> Rcvar {
    Rcvar::new(match value {
        Value::Null => Variable::Null,
        Value::Bool(b) => Variable::Bool(b),
        Value::Number(n) => Variable::Number(n),
        Value::String(s) => Variable::String(s),
        Value::Array(items) => Variable::Array(items.into_iter().map(json_into_jmes).collect()),
        Value::Object(map) => Variable::Object(
            map.into_iter()
                .map(|(k, v)| (k, json_into_jmes(v)))
                .collect(),
        ),
    })
}

/// JMESPath → JSON for rendering an expression's result (a request body, a column). An
/// expression reference (`&expr`), which cannot leave an expression, becomes null; a payload
/// uses [`try_jmes_to_json`], which refuses it.
pub fn jmes_to_json(value: &Variable) -> Value {
    try_jmes_to_json(value).unwrap_or(Value::Null)
}

/// JMESPath → JSON; an expression reference (`&expr`) has no JSON form and is an error.
pub fn try_jmes_to_json(value: &Variable) -> Result<Value, String> {
    Ok(match value {
        Variable::Null => Value::Null,
        Variable::Expref(_) => return Err(EXPREF.to_owned()),
        Variable::Bool(b) => Value::Bool(*b),
        Variable::Number(n) => Value::Number(n.clone()),
        Variable::String(s) => Value::String(s.clone()),
        Variable::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| try_jmes_to_json(v))
                .collect::<Result<_, _>>()?,
        ),
        Variable::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), try_jmes_to_json(v)?);
            }
            Value::Object(out)
        }
    })
}

/// A JMESPath value as compact JSON text; an expression reference is an error, not text.
pub fn jmes_to_vec(value: &Variable) -> Result<Vec<u8>, String> {
    struct Data<'a>(&'a Variable);
    impl serde::Serialize for Data<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeMap, SerializeSeq};
            match self.0 {
                Variable::Expref(_) => Err(S::Error::custom(EXPREF)),
                Variable::Array(items) => {
                    let mut seq = s.serialize_seq(Some(items.len()))?;
                    for item in items {
                        seq.serialize_element(&Data(item))?;
                    }
                    seq.end()
                }
                Variable::Object(map) => {
                    let mut out = s.serialize_map(Some(map.len()))?;
                    for (k, v) in map {
                        out.serialize_entry(k, &Data(v))?;
                    }
                    out.end()
                }
                other => other.serialize(s),
            }
        }
    }
    serde_json::to_vec(&Data(value)).map_err(|e| format!("cannot serialize the payload: {e}"))
}

const EXPREF: &str = "an expression produced an expression reference (`&…`), which is not data: \
                      it can only be passed to functions such as sort_by()";

/// A JSON number that neither Rhai's `INT` (i64) nor `FLOAT` (f64) holds exactly: an integer
/// outside the 64-bit range, or a number beyond f64's range. Scripts see it as the type
/// `BigNumber`; it goes back to JSON with its exact text.
#[derive(Clone, Debug)]
pub struct BigNumber {
    number: Number,
    /// The JSON pointer of the field it was read from, for the error of a script that
    /// tries to compute with it.
    from: String,
}

impl BigNumber {
    /// The number, with its exact text.
    pub fn number(&self) -> &Number {
        &self.number
    }

    fn refuse(&self, what: &str) -> Box<rhai::EvalAltResult> {
        format!(
            "the number {} (payload field `{}`) is outside what a script can compute with \
             exactly (integers must fit in 64 bits): `{what}` refused. Pass it through \
             unchanged, compare it with ==, or convert it explicitly with to_float() \
             (rounds) or to_string()",
            self.number,
            if self.from.is_empty() {
                "/"
            } else {
                &self.from
            },
        )
        .into()
    }
}

/// Registers [`BigNumber`] with a script engine: its type name, `to_string()`, `to_float()`,
/// `==`/`!=`, and an error naming the field for every arithmetic or ordering operator.
pub fn register_numbers(engine: &mut rhai::Engine) {
    use rhai::{EvalAltResult, FLOAT, INT};
    type Answer = Result<Dynamic, Box<EvalAltResult>>;
    engine
        .register_type_with_name::<BigNumber>("BigNumber")
        .register_fn("to_string", |n: &mut BigNumber| n.number.to_string())
        .register_fn("to_debug", |n: &mut BigNumber| n.number.to_string())
        .register_fn(
            "to_float",
            |n: &mut BigNumber| -> Result<FLOAT, Box<EvalAltResult>> {
                n.number
                    .as_f64()
                    .ok_or_else(|| n.refuse("to_float (beyond the range of a float)"))
            },
        )
        .register_fn("==", |a: BigNumber, b: BigNumber| a.number == b.number)
        .register_fn("!=", |a: BigNumber, b: BigNumber| a.number != b.number)
        .register_fn("-", |a: BigNumber| -> Answer { Err(a.refuse("-")) });
    for op in ["+", "-", "*", "/", "%", "**", "<", ">", "<=", ">="] {
        engine
            .register_fn(op, move |a: BigNumber, _: INT| -> Answer {
                Err(a.refuse(op))
            })
            .register_fn(op, move |_: INT, b: BigNumber| -> Answer {
                Err(b.refuse(op))
            })
            .register_fn(op, move |a: BigNumber, _: FLOAT| -> Answer {
                Err(a.refuse(op))
            })
            .register_fn(op, move |_: FLOAT, b: BigNumber| -> Answer {
                Err(b.refuse(op))
            })
            .register_fn(op, move |a: BigNumber, _: BigNumber| -> Answer {
                Err(a.refuse(op))
            });
    }
}

/// One step of the path to a value, for naming a field in an error.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn pointer(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

fn number_to_rhai(n: &Number, path: &[Step<'_>]) -> Dynamic {
    if let Some(i) = n.as_i64() {
        return Dynamic::from_int(i);
    }
    // An integer literal that is not an i64 (a u64 past i64::MAX, or longer) would be
    // rounded as a float; so would nothing else that f64 can hold.
    let integer = n.as_str().bytes().all(|b| b.is_ascii_digit() || b == b'-');
    match n.as_f64() {
        Some(f) if !integer => Dynamic::from_float(f),
        _ => Dynamic::from(BigNumber {
            number: n.clone(),
            from: pointer(path),
        }),
    }
}

/// JSON → Rhai.
pub fn json_to_rhai(value: &Value) -> Dynamic {
    json_to_rhai_at(value, &mut Vec::new())
}

fn json_to_rhai_at<'a>(value: &'a Value, path: &mut Vec<Step<'a>>) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => number_to_rhai(n, path),
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(items) => {
            let mut out = rhai::Array::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                out.push(json_to_rhai_at(item, path));
                path.pop();
            }
            Dynamic::from_array(out)
        }
        Value::Object(map) => {
            let mut out = rhai::Map::new();
            for (k, v) in map {
                path.push(Step::Key(k));
                out.insert(k.as_str().into(), json_to_rhai_at(v, path));
                path.pop();
            }
            Dynamic::from_map(out)
        }
    }
}

/// JMESPath → Rhai; an expression reference (`&expr`) has no Rhai form and is an error.
pub fn jmes_to_rhai(value: &Variable) -> Result<Dynamic, String> {
    jmes_to_rhai_at(value, &mut Vec::new())
}

fn jmes_to_rhai_at<'a>(value: &'a Variable, path: &mut Vec<Step<'a>>) -> Result<Dynamic, String> {
    Ok(match value {
        Variable::Null => Dynamic::UNIT,
        Variable::Expref(_) => return Err(EXPREF.to_owned()),
        Variable::Bool(b) => Dynamic::from_bool(*b),
        Variable::Number(n) => number_to_rhai(n, path),
        Variable::String(s) => Dynamic::from(s.clone()),
        Variable::Array(items) => {
            let mut out = rhai::Array::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                out.push(jmes_to_rhai_at(item, path)?);
                path.pop();
            }
            Dynamic::from_array(out)
        }
        Variable::Object(map) => {
            let mut out = rhai::Map::new();
            for (k, v) in map {
                path.push(Step::Key(k));
                out.insert(k.as_str().into(), jmes_to_rhai_at(v, path)?);
                path.pop();
            }
            Dynamic::from_map(out)
        }
    })
}

/// A Rhai float as a JSON number; NaN and the infinities have none.
fn float_to_json(f: f64) -> Result<Number, String> {
    Number::from_f64(f).ok_or_else(|| format!("the number {f} cannot be written as JSON"))
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
        Value::Number(float_to_json(f)?)
    } else if let Some(big) = value.read_lock::<BigNumber>() {
        Value::Number(big.number.clone())
    } else if value.is_string() {
        Value::String(value.clone().into_string()?)
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
        Variable::Number(float_to_json(f)?)
    } else if let Some(big) = value.read_lock::<BigNumber>() {
        Variable::Number(big.number.clone())
    } else if value.is_string() {
        Variable::String(value.clone().into_string()?)
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
        assert_eq!(try_jmes_to_json(&jmes).unwrap(), original);
        let rhai = jmes_to_rhai(&jmes).unwrap();
        assert_eq!(rhai_to_json(&rhai).unwrap(), original);
        assert_eq!(
            try_jmes_to_json(&rhai_to_jmes(&rhai).unwrap()).unwrap(),
            original
        );
        assert_eq!(rhai_to_json(&json_to_rhai(&original)).unwrap(), original);
        assert_eq!(
            try_jmes_to_json(&json_into_jmes(original.clone())).unwrap(),
            original
        );
    }

    #[test]
    fn integers_stay_integers() {
        let rhai = json_to_rhai(&json!(3));
        assert!(rhai.is_int());
        assert_eq!(rhai_to_json(&Dynamic::from_float(1.5)).unwrap(), json!(1.5));
    }

    #[test]
    fn big_integers_come_back_exactly_from_every_form() {
        let text = r#"{"big":12345678901234567890123,"u":18446744073709551615,"neg":-98765432109876543210,"f":0.5}"#;
        let original: Value = serde_json::from_str(text).unwrap();
        let rhai = json_to_rhai(&original);
        let map = rhai.read_lock::<rhai::Map>().unwrap();
        assert!(map["big"].is::<BigNumber>() && map["u"].is::<BigNumber>());
        assert!(map["f"].is_float());
        drop(map);
        // Rhai maps are sorted; with `arbitrary_precision` numbers compare by their text.
        let back = rhai_to_json(&rhai).unwrap();
        assert_eq!(back, original);
        assert_eq!(back["big"].to_string(), "12345678901234567890123");
        let jmes = jmes_to_rhai(&json_to_jmes(&original)).unwrap();
        let back = try_jmes_to_json(&rhai_to_jmes(&jmes).unwrap()).unwrap();
        assert_eq!(back, original);
        assert_eq!(back["neg"].to_string(), "-98765432109876543210");
    }

    #[test]
    fn a_script_computing_with_a_big_integer_is_told_which_field() {
        let mut engine = rhai::Engine::new();
        register_numbers(&mut engine);
        let payload: Value =
            serde_json::from_str(r#"{"a":[{"id":12345678901234567890123}]}"#).unwrap();
        let mut scope = rhai::Scope::new();
        scope.push_dynamic("payload", json_to_rhai(&payload));
        let e = engine
            .eval_with_scope::<Dynamic>(&mut scope, "payload.a[0].id + 1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("12345678901234567890123") && e.contains("/a/0/id"),
            "{e}"
        );
        let same = engine
            .eval_with_scope::<bool>(&mut scope, "payload.a[0].id == payload.a[0].id")
            .unwrap();
        assert!(same);
        let text = engine
            .eval_with_scope::<String>(&mut scope, "`${payload.a[0].id}`")
            .unwrap();
        assert_eq!(text, "12345678901234567890123");
    }

    #[test]
    fn an_expression_reference_is_not_data() {
        let expref = Variable::Expref(jmespath::parse("a").unwrap());
        assert!(
            try_jmes_to_json(&expref)
                .unwrap_err()
                .contains("expression reference")
        );
        assert!(jmes_to_rhai(&expref).is_err());
    }
}
