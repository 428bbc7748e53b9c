//! JSON values as bind parameters of whatever type PostgreSQL inferred for them.

use bytes::BytesMut;
use serde_json::Value;
use std::error::Error;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// One JSON value bound to a parameter: converted to the parameter's type when it is sent.
#[derive(Debug)]
pub struct JsonParam(pub Value);

impl ToSql for JsonParam {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let v = &self.0;
        if v.is_null() {
            return Ok(IsNull::Yes);
        }
        let wrong = || -> Box<dyn Error + Sync + Send> {
            format!("cannot bind {v} to a parameter of type {ty}").into()
        };
        match *ty {
            Type::BOOL => v.as_bool().ok_or_else(wrong)?.to_sql(ty, out),
            Type::INT2 => i16::try_from(v.as_i64().ok_or_else(wrong)?)?.to_sql(ty, out),
            Type::INT4 => i32::try_from(v.as_i64().ok_or_else(wrong)?)?.to_sql(ty, out),
            Type::INT8 => v.as_i64().ok_or_else(wrong)?.to_sql(ty, out),
            Type::FLOAT4 => (v.as_f64().ok_or_else(wrong)? as f32).to_sql(ty, out),
            Type::FLOAT8 => v.as_f64().ok_or_else(wrong)?.to_sql(ty, out),
            Type::JSON | Type::JSONB => v.to_sql(ty, out),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => match v {
                Value::String(s) => s.as_str().to_sql(ty, out),
                other => other.to_string().as_str().to_sql(ty, out),
            },
            _ => Err(format!(
                "parameters of type {ty} are not supported; cast in the statement, e.g. `$1::text::{ty}`"
            )
            .into()),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // Checked value by value in `to_sql`, with an error that names the type.
        true
    }

    to_sql_checked!();
}
