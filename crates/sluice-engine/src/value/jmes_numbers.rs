//! What serde_json's `arbitrary_precision` breaks in jmespath, mended.
//!
//! With that feature serde_json hands a number that is not an i64/u64 (`9.5`, `1e3`,
//! `12345678901234567890123`) to any deserializer other than its own `Value` as a one-entry
//! map keyed by a private token. jmespath parses the JSON literals of an expression
//! (`` `9.5` ``) and the argument of `to_number()` through serde into its own `Variable`, so
//! both would come out as that map: `price > `9.5`` would be null, silently. The literals are
//! turned back into numbers once, when an expression compiles, and `to_number` is replaced.

use jmespath::ast::{Ast, KeyValuePair};
use jmespath::functions::Function;
use jmespath::{Context, ErrorReason, JmespathError, Rcvar, Variable};
use serde_json::Number;

/// The key serde_json puts in the map it makes of a number (`serde_json::number::TOKEN`,
/// which is private). The unit tests fail should serde_json ever change it.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// The number a token map stands for, if `value` is one.
fn as_token_number(value: &Variable) -> Option<Number> {
    let Variable::Object(map) = value else {
        return None;
    };
    match (map.len(), map.get(NUMBER_TOKEN).map(|v| &**v)) {
        (1, Some(Variable::String(text))) => text.parse().ok(),
        _ => None,
    }
}

/// `value` with every token map inside it turned back into a number; `None` if it has none.
fn repair_variable(value: &Rcvar) -> Option<Rcvar> {
    if let Some(number) = as_token_number(value) {
        return Some(Rcvar::new(Variable::Number(number)));
    }
    match &**value {
        Variable::Array(items) => {
            let repaired: Vec<Option<Rcvar>> = items.iter().map(repair_variable).collect();
            repaired.iter().any(Option::is_some).then(|| {
                Rcvar::new(Variable::Array(
                    repaired
                        .into_iter()
                        .zip(items)
                        .map(|(new, old)| new.unwrap_or_else(|| old.clone()))
                        .collect(),
                ))
            })
        }
        Variable::Object(map) => {
            let mut changed = false;
            let out = map
                .iter()
                .map(|(k, v)| {
                    let new = repair_variable(v);
                    changed |= new.is_some();
                    (k.clone(), new.unwrap_or_else(|| v.clone()))
                })
                .collect();
            changed.then(|| Rcvar::new(Variable::Object(out)))
        }
        _ => None,
    }
}

/// Turns the number literals of a compiled expression back into numbers (see the module
/// documentation); returns whether anything changed.
pub fn repair_literals(ast: &mut Ast) -> bool {
    let pair = |lhs: &mut Ast, rhs: &mut Ast| repair_literals(lhs) | repair_literals(rhs);
    match ast {
        Ast::Literal { value, .. } => match repair_variable(value) {
            Some(new) => {
                *value = new;
                true
            }
            None => false,
        },
        Ast::Comparison { lhs, rhs, .. }
        | Ast::Projection { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. }
        | Ast::Subexpr { lhs, rhs, .. } => pair(lhs, rhs),
        Ast::Condition {
            predicate, then, ..
        } => pair(predicate, then),
        Ast::Expref { ast, .. } => repair_literals(ast),
        Ast::Flatten { node, .. } | Ast::Not { node, .. } | Ast::ObjectValues { node, .. } => {
            repair_literals(node)
        }
        Ast::Function { args, .. } | Ast::MultiList { elements: args, .. } => args
            .iter_mut()
            .fold(false, |acc, a| repair_literals(a) | acc),
        Ast::MultiHash { elements, .. } => elements
            .iter_mut()
            .fold(false, |acc, KeyValuePair { value, .. }| {
                repair_literals(value) | acc
            }),
        Ast::Identity { .. } | Ast::Field { .. } | Ast::Index { .. } | Ast::Slice { .. } => false,
    }
}

/// `to_number()`, as JMESPath specifies it, with the exact text of the number kept: a number
/// is returned as it is, a string that is a JSON number (within f64's range) becomes that
/// number, anything else is null.
pub struct ToNumber;

impl Function for ToNumber {
    fn evaluate(&self, args: &[Rcvar], ctx: &mut Context<'_>) -> Result<Rcvar, JmespathError> {
        let [arg] = args else {
            return Err(JmespathError::from_ctx(
                ctx,
                ErrorReason::Parse("to_number() takes one argument".to_owned()),
            ));
        };
        Ok(match &**arg {
            Variable::Number(_) => arg.clone(),
            Variable::String(s) => Rcvar::new(
                s.parse::<Number>()
                    .ok()
                    .filter(|n| n.as_f64().is_some())
                    .map_or(Variable::Null, Variable::Number),
            ),
            _ => Rcvar::new(Variable::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expr: &str, data: &str) -> String {
        let mut runtime = jmespath::Runtime::new();
        runtime.register_builtin_functions();
        runtime.register_function("to_number", Box::new(ToNumber));
        let mut ast = jmespath::parse(expr).unwrap();
        repair_literals(&mut ast);
        let data = crate::value::json_to_jmes(&serde_json::from_str(data).unwrap());
        let mut ctx = Context::new(expr, &runtime);
        serde_json::to_string(&*jmespath::interpret(&data, &ast, &mut ctx).unwrap()).unwrap()
    }

    #[test]
    fn float_and_big_literals_are_numbers() {
        assert_eq!(run("a > `9.5`", r#"{"a": 10.5}"#), "true");
        assert_eq!(run("a < `9.5`", r#"{"a": 10.5}"#), "false");
        assert_eq!(
            run("[`12345678901234567890123`, {x: `[1.5]`}]", "{}"),
            "[12345678901234567890123,{\"x\":[1.5]}]"
        );
        assert_eq!(run("`{\"a\": 2.5}`.a", "null"), "2.5");
    }

    #[test]
    fn to_number_keeps_the_text() {
        assert_eq!(run("to_number('9.5')", "null"), "9.5");
        assert_eq!(
            run("to_number('12345678901234567890123')", "null"),
            "12345678901234567890123"
        );
        assert_eq!(run("to_number('x')", "null"), "null");
        assert_eq!(run("to_number('1e400')", "null"), "null");
        assert_eq!(run("to_number(`[1]`)", "null"), "null");
        assert_eq!(run("to_number(a)", r#"{"a": 1.25}"#), "1.25");
    }

    #[test]
    fn big_integers_pass_through_expressions_exactly() {
        let data = r#"{"id": 12345678901234567890123, "n": [3, 1.5]}"#;
        assert_eq!(
            run("{id: id, max: max(n)}", data),
            r#"{"id":12345678901234567890123,"max":3}"#
        );
    }
}
