//! JSON values as MariaDB parameters. The server converts each to its column's type, so a
//! value is sent in the form that converts without loss: integers as integers, other numbers
//! as doubles when a double holds them exactly (15 significant digits or fewer) and as their
//! exact decimal text otherwise (a `DECIMAL` column keeps every digit), strings as text,
//! booleans as 1 or 0 (MariaDB's `BOOLEAN` is `TINYINT(1)`), objects and arrays as JSON text
//! (for `JSON` columns).

use mysql_async::Value as Sql;
use serde_json::Value;

/// The parameter for one JSON value.
pub(crate) fn to_sql(value: Value) -> Sql {
    match value {
        Value::Null => Sql::NULL,
        Value::Bool(b) => Sql::Int(i64::from(b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Sql::Int(i),
            (None, Some(u)) => Sql::UInt(u),
            _ => {
                let text = n.to_string();
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() && significant_digits(&text) <= 15 => Sql::Double(f),
                    _ => Sql::Bytes(text.into_bytes()),
                }
            }
        },
        Value::String(s) => Sql::Bytes(s.into_bytes()),
        other => Sql::Bytes(other.to_string().into_bytes()),
    }
}

/// The significant digits of a JSON number's text (its mantissa without sign, point, and
/// leading or trailing zeros): up to 15, a double holds the number exactly as written.
fn significant_digits(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

/// A key value read back from a row, as text (for the message id and metadata).
pub(crate) fn key_text(value: &Sql) -> String {
    match value {
        Sql::NULL => String::new(),
        Sql::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Sql::Int(i) => i.to_string(),
        Sql::UInt(u) => u.to_string(),
        Sql::Float(f) => f.to_string(),
        Sql::Double(d) => d.to_string(),
        // Dates and times as the server would print them.
        other => other.as_sql(true).trim_matches('\'').to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_keep_their_meaning() {
        assert_eq!(to_sql(json!(null)), Sql::NULL);
        assert_eq!(to_sql(json!(true)), Sql::Int(1));
        assert_eq!(to_sql(json!(-7)), Sql::Int(-7));
        assert_eq!(to_sql(json!(u64::MAX)), Sql::UInt(u64::MAX));
        assert_eq!(to_sql(json!(1.5)), Sql::Double(1.5));
        let exact: Value = serde_json::from_str("1299.0").unwrap();
        assert_eq!(to_sql(exact), Sql::Double(1299.0));
        let long: Value = serde_json::from_str("0.1234567890123456").unwrap();
        assert_eq!(to_sql(long), Sql::Bytes(b"0.1234567890123456".to_vec()));
        let big: Value = serde_json::from_str("123456789012345678901234567890").unwrap();
        assert_eq!(
            to_sql(big),
            Sql::Bytes(b"123456789012345678901234567890".to_vec())
        );
        assert_eq!(to_sql(json!("a'b")), Sql::Bytes(b"a'b".to_vec()));
        assert_eq!(
            to_sql(json!({"k": [1]})),
            Sql::Bytes(br#"{"k":[1]}"#.to_vec())
        );
        assert_eq!(key_text(&Sql::Int(42)), "42");
        assert_eq!(key_text(&Sql::Bytes(b"e-1".to_vec())), "e-1");
    }
}
