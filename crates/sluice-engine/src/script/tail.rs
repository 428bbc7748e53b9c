//! The return rule: what a script's value does to the payload.
//!
//! Rhai gives a script the value of its last statement, so a script ending in
//! `payload.remove("x");` would replace the payload with the removed value. sluice narrows
//! that: a script replaces the payload only
//! - with an explicit `return <value>;` (anywhere), or
//! - when its last statement is a bare expression: a variable (`payload`), a literal
//!   (`#{...}`, `[...]`, a string, a number), a property or index (`payload.order`), or an
//!   operator over such values (`a ?? b`, `x + y`).
//!
//! Any other last statement — a method or function call, `if`, `switch`, a block, a loop,
//! an assignment — leaves the payload as the script left `payload`. The rule is applied to
//! the AST when the script compiles: such a script gets a final `()` statement, so that its
//! natural value is `()` while a `return` still returns. `sluice check` warns when the last
//! statement is a call whose result is thereby ignored.

use rhai::{AST, Expr, Position, Stmt};

/// Methods whose result is always `()`: a script ending with one of them gets no warning.
const UNIT_METHODS: &[&str] = &[
    "push",
    "append",
    "insert",
    "clear",
    "truncate",
    "pad",
    "reverse",
    "sort",
    "dedup",
    "fill_with",
    "mixin",
    "make_upper",
    "make_lower",
    "trim",
    "splice",
    "crop",
    "chop",
];

/// Functions whose result is always `()`.
const UNIT_FUNCTIONS: &[&str] = &["print", "debug"];

/// A compiled script, prepared for the return rule.
pub struct Script {
    /// The AST to run.
    pub ast: AST,
    /// Whether the last statement's value replaces the payload (a bare expression).
    pub last_value_replaces: bool,
    /// Set when the last statement is a call whose result is ignored.
    pub warning: Option<TailWarning>,
}

/// A script whose last statement is a call whose result does not replace the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailWarning {
    /// 1-based line inside the script.
    pub line: usize,
    /// 1-based column inside the script.
    pub column: usize,
    /// The method or function called.
    pub call: String,
    /// `method` or `function`.
    pub what: &'static str,
}

impl TailWarning {
    /// The one-sentence message.
    pub fn message(&self) -> String {
        format!(
            "the script ends with a call of the {} `{}`; its result does not replace the payload",
            self.what, self.call
        )
    }

    /// What to do about it.
    pub fn help(&self) -> String {
        format!(
            "a script replaces the payload only with `return <value>;` or a bare last expression such as `payload` or `#{{...}}`; write `return ...;` if the result of `{}` should become the payload, or end the script with `payload` to keep it (and this warning goes away)",
            self.call
        )
    }
}

/// Applies the return rule to a freshly compiled AST.
pub fn prepare(ast: AST) -> Script {
    let last = ast.statements().last();
    let shape = last.map_or(Shape::Other, stmt_shape);
    let warning = last.and_then(|stmt| tail_call(stmt, stmt.position()));
    let last_value_replaces = matches!(shape, Shape::Bare);
    let mut ast = ast;
    if !last_value_replaces {
        // The value of the script is now `()` unless it says `return`.
        let unit = Stmt::Expr(Box::new(Expr::Unit(Position::NONE)));
        ast.combine(AST::new([unit], rhai::Module::new()));
    }
    Script {
        ast,
        last_value_replaces,
        warning,
    }
}

enum Shape {
    /// A value written out: its value replaces the payload.
    Bare,
    /// Anything else: its value is ignored.
    Other,
}

fn stmt_shape(stmt: &Stmt) -> Shape {
    match stmt {
        Stmt::Expr(expr) => expr_shape(expr),
        Stmt::FnCall(call, _) if call.op_token.is_some() => Shape::Bare,
        _ => Shape::Other,
    }
}

fn expr_shape(expr: &Expr) -> Shape {
    match expr {
        Expr::FnCall(call, _) if call.op_token.is_none() => Shape::Other,
        Expr::MethodCall(..) | Expr::Stmt(_) | Expr::Custom(..) => Shape::Other,
        Expr::Dot(..) | Expr::Index(..) if chain_call(expr).is_some() => Shape::Other,
        _ => Shape::Bare,
    }
}

/// The call a property/index chain ends in (or goes through), if any.
fn chain_call(expr: &Expr) -> Option<(&str, &'static str, Position)> {
    match expr {
        Expr::MethodCall(call, pos) => Some((call.name.as_str(), "method", *pos)),
        Expr::FnCall(call, pos) if call.op_token.is_none() => {
            Some((call.name.as_str(), "function", *pos))
        }
        Expr::Dot(binary, ..) | Expr::Index(binary, ..) => {
            chain_call(&binary.rhs).or_else(|| chain_call(&binary.lhs))
        }
        _ => None,
    }
}

/// The call whose result is ignored at the end of a statement: the statement itself, or the
/// last statement of each branch of an `if` or a block.
fn tail_call(stmt: &Stmt, at: Position) -> Option<TailWarning> {
    let (name, what, pos) = match stmt {
        Stmt::FnCall(call, pos) if call.op_token.is_none() => {
            (call.name.as_str(), "function", *pos)
        }
        Stmt::Expr(expr) => {
            // Point at the start of the statement (`payload.remove(...)`), not at the call.
            let (name, what, _) = chain_call(expr)?;
            (name, what, expr.start_position())
        }
        Stmt::If(flow, pos) => {
            let branches = [flow.body.statements(), flow.branch.statements()];
            return branches
                .iter()
                .filter_map(|b| b.last())
                .find_map(|last| tail_call(last, *pos));
        }
        Stmt::Block(block) => return tail_call(block.statements().last()?, at),
        _ => return None,
    };
    let unit = match what {
        "method" => UNIT_METHODS.contains(&name),
        _ => UNIT_FUNCTIONS.contains(&name),
    };
    if unit {
        return None;
    }
    let pos = if pos.is_none() { at } else { pos };
    Some(TailWarning {
        line: pos.line().unwrap_or(1),
        column: pos.position().unwrap_or(1),
        call: name.to_owned(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(source: &str) -> Script {
        prepare(rhai::Engine::new().compile(source).unwrap())
    }

    #[test]
    fn bare_last_expressions_replace_the_payload() {
        for source in [
            "payload",
            "#{a: 1}",
            "payload.inner",
            "payload[\"items\"]",
            "[1, 2]",
            "payload ?? #{}",
        ] {
            let script = prepared(source);
            assert!(script.last_value_replaces, "{source}");
            assert_eq!(script.warning, None, "{source}");
        }
    }

    #[test]
    fn calls_and_statements_do_not() {
        for source in [
            "payload.remove(\"x\");",
            "payload.remove(\"x\")",
            "payload.a.keys()",
            "to_json(payload)",
            "if true { payload.remove(\"x\") }",
            "payload.x = 1;",
            "let a = 1;",
            "payload.push(1);",
        ] {
            assert!(!prepared(source).last_value_replaces, "{source}");
        }
    }

    #[test]
    fn warns_for_ignored_results_only() {
        let w = prepared("let a = 1;\n  payload.remove(\"x\");")
            .warning
            .unwrap();
        assert_eq!((w.line, w.call.as_str(), w.what), (2, "remove", "method"));
        let w = prepared("if payload.a == 1 { payload.remove(\"a\") } else { 0 }")
            .warning
            .unwrap();
        assert_eq!(w.call, "remove");
        assert_eq!(
            prepared("to_json(payload)").warning.unwrap().what,
            "function"
        );
        for quiet in [
            "payload.push(1);",
            "print(\"x\");",
            "payload.x = 1;",
            "payload",
            "payload.remove(\"x\"); payload",
        ] {
            assert_eq!(prepared(quiet).warning, None, "{quiet}");
        }
    }

    /// The methods listed as returning `()` really do, in the Rhai version in use.
    #[test]
    fn unit_methods_return_unit() {
        let engine = rhai::Engine::new();
        for source in [
            "let a = [3, 1]; a.push(1)",
            "let a = [3, 1]; a.append([1])",
            "let a = [3, 1]; a.insert(0, 1)",
            "let a = [3, 1]; a.clear()",
            "let a = [3, 1]; a.truncate(1)",
            "let a = [3, 1]; a.pad(4, 0)",
            "let a = [3, 1]; a.reverse()",
            "let a = [3, 1]; a.sort()",
            "let a = [3, 1]; a.dedup()",
            "let a = [3, 1]; a.splice(0, 1, [2])",
            "let a = [3, 1]; a.chop(1)",
            "let m = #{a: 1}; m.fill_with(#{b: 2})",
            "let m = #{a: 1}; m.mixin(#{b: 2})",
            "let m = #{a: 1}; m.clear()",
            "let s = \" x \"; s.trim()",
            "let s = \"x\"; s.make_upper()",
            "let s = \"x\"; s.make_lower()",
            "let s = \"xyz\"; s.crop(1)",
            "let s = \"xyz\"; s.truncate(1)",
            "let s = \"xyz\"; s.pad(5, '-')",
            "let s = \"xyz\"; s.clear()",
        ] {
            let value: rhai::Dynamic = engine.eval(source).unwrap();
            assert!(value.is_unit(), "{source} returned {value:?}");
        }
    }
}
