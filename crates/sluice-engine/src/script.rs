//! The Rhai sandbox: operation, depth and size limits, a wall-clock deadline, no modules,
//! `print`/`debug` to the log.

use crate::error::{ErrorKind, FlowError};
use crate::message::{Meta, Payload};
use rhai::{AST, Dynamic, Engine, Scope};
use sluice_flow::ScriptLimits;
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    // The progress callback is shared by every run of an engine, so the deadline of the run
    // currently executing on this thread lives here.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    // `print` and `debug` callbacks are shared too; this names the message being run.
    static CURRENT_MESSAGE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn current_message() -> String {
    CURRENT_MESSAGE.with(|m| m.borrow().clone())
}

/// How often (in Rhai operations) the deadline is looked at; reading the clock on every
/// operation would cost more than the operations.
const DEADLINE_CHECK_EVERY: u64 = 256;

/// A sandboxed Rhai engine for one flow version.
pub struct Sandbox {
    engine: Engine,
    deadline: Duration,
    max_operations: u64,
}

impl Sandbox {
    /// An engine with the flow's limits.
    pub fn new(flow: &str, limits: &ScriptLimits) -> Sandbox {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(32)
            .set_max_expr_depths(64, 32)
            .set_max_string_size(1 << 20)
            .set_max_array_size(100_000)
            .set_max_map_size(10_000)
            .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        engine.disable_symbol("eval");
        // Numbers Rhai cannot hold exactly arrive as `BigNumber` (see value.rs).
        crate::value::register_numbers(&mut engine);
        let flow_name = flow.to_owned();
        engine.on_print(move |text| {
            tracing::info!(flow = %flow_name, message_id = %current_message(), script = true, "{text}")
        });
        let flow_name = flow.to_owned();
        engine.on_debug(move |text, _, pos| {
            tracing::debug!(flow = %flow_name, message_id = %current_message(), script = true, line = pos.line(), "{text}")
        });
        engine.on_progress(|operations| {
            if operations % DEADLINE_CHECK_EVERY != 0 {
                return None;
            }
            match DEADLINE.get() {
                Some(deadline) if Instant::now() >= deadline => Some(Dynamic::from("deadline")),
                _ => None,
            }
        });
        Sandbox {
            engine,
            deadline: limits.deadline.0,
            max_operations: limits.max_operations,
        }
    }

    /// Compiles a script; the error has a 1-based line and column inside the script.
    pub fn compile(&self, source: &str) -> Result<AST, (usize, usize, String)> {
        self.engine.compile(source).map_err(|e| {
            let pos = e.position();
            (
                pos.line().unwrap_or(1),
                pos.position().unwrap_or(1),
                e.err_type().to_string(),
            )
        })
    }

    /// Runs a script over the payload: `payload` is mutable, `meta` read-only; a returned
    /// value other than `()` replaces the payload. `uses_meta` says whether the script
    /// mentions `meta` at all; building the map costs more than many scripts.
    pub fn run(
        &self,
        ast: &AST,
        uses_meta: bool,
        payload: &mut Payload,
        meta: &Arc<Meta>,
    ) -> Result<(), FlowError> {
        let mut scope = Scope::new();
        let taken = payload
            .take_rhai()
            .map_err(|e| FlowError::permanent(ErrorKind::Script, e))?;
        scope.push_dynamic("payload", taken);
        if uses_meta {
            let meta_map: rhai::Map = meta
                .iter()
                .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
                .collect();
            scope.push_constant("meta", meta_map);
        }
        DEADLINE.set(Some(Instant::now() + self.deadline));
        CURRENT_MESSAGE.with(|m| {
            let mut m = m.borrow_mut();
            m.clear();
            m.push_str(meta.get("message_id").map(String::as_str).unwrap_or("-"));
        });
        let result = self.engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast);
        DEADLINE.set(None);
        match result {
            Ok(value) if !value.is_unit() => {
                *payload = Payload::from_rhai(value);
                Ok(())
            }
            Ok(_) => {
                let value = scope
                    .get_mut("payload")
                    .map(std::mem::take)
                    .unwrap_or_default();
                *payload = Payload::from_rhai(value);
                Ok(())
            }
            Err(e) => Err(self.explain(*e)),
        }
    }

    fn explain(&self, error: rhai::EvalAltResult) -> FlowError {
        use rhai::EvalAltResult as E;
        let message = match &error {
            E::ErrorTerminated(..) => format!(
                "the script ran past its deadline of {} and was stopped",
                humantime::format_duration(self.deadline)
            ),
            E::ErrorTooManyOperations(..) => format!(
                "the script exceeded {} operations and was stopped (raise `script_limits.max_operations` if this is expected)",
                self.max_operations
            ),
            other => {
                let pos = other.position();
                match pos.line() {
                    Some(line) => format!(
                        "{} (script line {line})",
                        other.to_string().trim_end_matches(&format!(" ({pos})"))
                    ),
                    None => other.to_string(),
                }
            }
        };
        FlowError::new(ErrorKind::Script, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_flow::Dur;

    fn sandbox(deadline_ms: u64, ops: u64) -> Sandbox {
        Sandbox::new(
            "t",
            &ScriptLimits {
                deadline: Dur(Duration::from_millis(deadline_ms)),
                max_operations: ops,
            },
        )
    }

    #[test]
    fn mutates_the_payload_and_reads_meta() {
        let s = sandbox(1000, 100_000);
        let ast = s
            .compile("payload.total = payload.qty * 2; payload.from = meta[\"flow\"];")
            .unwrap();
        let mut p = Payload::from_json(json!({"qty": 3}));
        let meta = Arc::new(Meta::from([("flow".to_owned(), "f".to_owned())]));
        s.run(&ast, true, &mut p, &meta).unwrap();
        assert_eq!(
            p.into_json().unwrap(),
            json!({"qty": 3, "total": 6, "from": "f"})
        );
    }

    #[test]
    fn endless_loop_stops_at_the_deadline() {
        let s = sandbox(100, u64::MAX);
        let ast = s.compile("loop { }").unwrap();
        let started = Instant::now();
        let err = s
            .run(
                &ast,
                false,
                &mut Payload::from_json(json!({})),
                &Arc::new(Meta::new()),
            )
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Script);
        assert!(err.message.contains("deadline"), "{}", err.message);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn no_imports_and_syntax_errors_have_lines() {
        let s = sandbox(100, 10_000);
        let ast = s.compile("import \"x\" as y; 1").unwrap();
        assert!(
            s.run(
                &ast,
                false,
                &mut Payload::from_json(json!({})),
                &Arc::new(Meta::new())
            )
            .is_err()
        );
        let (line, _, message) = s.compile("let a = 1;\nlet = ;").unwrap_err();
        assert_eq!(line, 2, "{message}");
    }
}
