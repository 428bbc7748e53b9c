//! The Rhai sandbox: operation, depth and size limits, a wall-clock deadline, no modules,
//! no `sleep`, `print`/`debug` to the log. Scripts run on tokio's blocking pool (or in place
//! on the blocking thread that read their message, `in_place.rs`), never on the threads that
//! serve I/O and the other flows, at most `script_limits.concurrency` of a flow at once.

use crate::error::{ErrorKind, FlowError};
use crate::message::Ids;
use crate::message::{Meta, Payload};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Scope};
use sluice_flow::ScriptLimits;
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub mod tail;

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

/// What a script that calls `sleep` is told.
const NO_SLEEP: &str = "`sleep` is not available in sluice scripts: it would hold a thread past the deadline; pace messages with a `throttle` step instead";

/// The largest string a script may build, in bytes.
const MAX_STRING_BYTES: usize = 1 << 20;

/// `replace` with the size of the result checked before it is built.
fn bounded_replace(
    s: &mut rhai::ImmutableString,
    find: &str,
    with: &str,
) -> Result<(), Box<EvalAltResult>> {
    // An empty pattern matches between every two characters, as in `str::replace`.
    let count = if find.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(find).count()
    };
    let size = (s.len() - count * find.len()).saturating_add(count.saturating_mul(with.len()));
    if size > MAX_STRING_BYTES {
        return Err(format!(
            "`replace` would build a string of {size} bytes; the limit is {MAX_STRING_BYTES}"
        )
        .into());
    }
    *s = s.replace(find, with).into();
    Ok(())
}

/// How often (in Rhai operations) the deadline is looked at; reading the clock on every
/// operation would cost more than the operations.
const DEADLINE_CHECK_EVERY: u64 = 256;

/// How long past its deadline a script run may take before the message fails without it.
/// A run normally stops itself within a few operations of the deadline; only a built-in
/// function that does not return to Rhai (none is known to remain) can keep it longer.
const OVERRUN_GRACE: Duration = Duration::from_millis(250);

/// A sandboxed Rhai engine for one flow version.
pub struct Sandbox {
    engine: Engine,
    deadline: Duration,
    max_operations: u64,
    /// One permit per script run of this flow under way: the flow's share of the CPU.
    runs: Arc<Semaphore>,
}

impl Sandbox {
    /// An engine with the flow's limits.
    pub fn new(flow: &str, limits: &ScriptLimits) -> Sandbox {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations())
            .set_max_call_levels(32)
            .set_max_expr_depths(64, 32)
            .set_max_string_size(MAX_STRING_BYTES)
            .set_max_array_size(100_000)
            .set_max_map_size(10_000)
            // Compiled as written; `compile` optimizes after the return rule is applied.
            .set_optimization_level(rhai::OptimizationLevel::None)
            .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        engine.disable_symbol("eval");
        // Rhai's `sleep` blocks the thread, out of reach of the deadline. Functions registered
        // on the engine are found before the standard package's, so these replace it.
        engine
            .register_fn("sleep", |_: rhai::INT| -> Result<(), Box<EvalAltResult>> {
                Err(NO_SLEEP.into())
            })
            .register_fn(
                "sleep",
                |_: rhai::FLOAT| -> Result<(), Box<EvalAltResult>> { Err(NO_SLEEP.into()) },
            );
        // Rhai checks a string's size after a built-in returns, so `replace` could build a
        // string of a terabyte (1 MiB, each character replaced by 1 MiB) inside one call, out
        // of reach of the deadline. These compute the size first.
        engine
            .register_fn(
                "replace",
                |s: &mut rhai::ImmutableString, find: &str, with: &str| {
                    bounded_replace(s, find, with)
                },
            )
            .register_fn(
                "replace",
                |s: &mut rhai::ImmutableString, find: char, with: &str| {
                    bounded_replace(s, find.encode_utf8(&mut [0; 4]), with)
                },
            );
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
            deadline: limits.deadline(),
            max_operations: limits.max_operations(),
            runs: Arc::new(Semaphore::new(limits.concurrency())),
        }
    }

    /// Runs a script like [`Sandbox::run`], but on the blocking pool (or in place, on a
    /// thread that may block: [`crate::in_place::may_block`]), under one of the flow's permits, and never past its deadline (plus [`OVERRUN_GRACE`]): should a run
    /// not come back in time, the message fails and the permit stays taken until the run
    /// ends, so that a stuck script still counts against the flow's share.
    pub async fn run_isolated(
        self: &Arc<Self>,
        ast: &Arc<AST>,
        uses_meta: bool,
        payload: &mut Payload,
        meta: &Arc<Meta>,
    ) -> Result<(), FlowError> {
        let Ok(permit) = self.runs.clone().acquire_owned().await else {
            return Err(FlowError::new(
                ErrorKind::Script,
                "internal: the flow's script permits are closed",
            ));
        };
        if crate::in_place::may_block() {
            // Already on a thread that serves no I/O (a trigger's reading thread, running the
            // message in place): the hand-off to the blocking pool would only cost. The
            // deadline holds the same, through the progress callback; `sleep` is not there.
            let result = self.run(ast, uses_meta, payload, meta);
            drop(permit);
            return result;
        }
        let (sandbox, ast, meta) = (self.clone(), ast.clone(), meta.clone());
        let mut owned = std::mem::replace(payload, Payload::from_json(serde_json::Value::Null));
        let task = tokio::task::spawn_blocking(move || {
            let result = sandbox.run(&ast, uses_meta, &mut owned, &meta);
            drop(permit);
            (owned, result)
        });
        match tokio::time::timeout(self.deadline + OVERRUN_GRACE, task).await {
            Ok(Ok((owned, result))) => {
                *payload = owned;
                result
            }
            Ok(Err(join)) => Err(FlowError::new(
                ErrorKind::Script,
                format!("the script stopped abnormally: {join}"),
            )),
            Err(_) => Err(FlowError::new(
                ErrorKind::Script,
                format!(
                    "the script ran past its deadline of {} inside a built-in function and was abandoned; its slot is freed when the function returns",
                    humantime::format_duration(self.deadline)
                ),
            )),
        }
    }

    /// Compiles a script; the error has a 1-based line and column inside the script.
    /// The AST is prepared for the return rule (see [`tail`]).
    pub fn compile(&self, source: &str) -> Result<tail::Script, (usize, usize, String)> {
        let ast = self.engine.compile(source).map_err(|e| {
            let pos = e.position();
            (
                pos.line().unwrap_or(1),
                pos.position().unwrap_or(1),
                e.err_type().to_string(),
            )
        })?;
        // The return rule reads the script as written; the optimizer runs after it, so a
        // trailing `return x;` is not first turned into a bare `x`.
        let mut script = tail::prepare(ast);
        script.ast = self.engine.optimize_ast(
            &Scope::new(),
            std::mem::take(&mut script.ast),
            rhai::OptimizationLevel::Simple,
        );
        Ok(script)
    }

    /// Runs a script over the payload: `payload` is mutable, `meta` read-only; a returned
    /// value other than `()` replaces the payload (an AST from [`Sandbox::compile`] returns
    /// a value only by `return` or a bare last expression). `uses_meta` says whether the script
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
            m.push_str(meta.message_id());
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

    fn sandbox(deadline_ms: u64, ops: u64) -> Sandbox {
        Sandbox::new(
            "t",
            &ScriptLimits::new(Duration::from_millis(deadline_ms), ops),
        )
    }

    #[test]
    fn mutates_the_payload_and_reads_meta() {
        let s = sandbox(1000, 100_000);
        let ast = s
            .compile("payload.total = payload.qty * 2; payload.from = meta[\"flow\"];")
            .unwrap()
            .ast;
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
        let ast = s.compile("loop { }").unwrap().ast;
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
        let ast = s.compile("import \"x\" as y; 1").unwrap().ast;
        assert!(
            s.run(
                &ast,
                false,
                &mut Payload::from_json(json!({})),
                &Arc::new(Meta::new())
            )
            .is_err()
        );
        let Err((line, _, message)) = s.compile("let a = 1;\nlet = ;") else {
            panic!("a syntax error compiles");
        };
        assert_eq!(line, 2, "{message}");
    }

    fn run_on(
        s: &Sandbox,
        source: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, FlowError> {
        let ast = s.compile(source).unwrap().ast;
        let mut p = Payload::from_json(payload);
        s.run(&ast, false, &mut p, &Arc::new(Meta::new()))?;
        Ok(p.into_json().unwrap())
    }

    #[test]
    fn sleep_is_refused_at_once() {
        let s = sandbox(5_000, 1_000_000);
        for source in [
            "sleep(10);",
            "sleep(2.5);",
            "payload.a = 1; sleep(10); payload",
        ] {
            let started = Instant::now();
            let err = run_on(&s, source, json!({})).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Script);
            assert!(
                err.message.contains("`sleep` is not available"),
                "{}",
                err.message
            );
            assert!(started.elapsed() < Duration::from_secs(1), "{source}");
        }
    }

    #[test]
    fn the_return_rule() {
        let s = sandbox(1_000, 1_000_000);
        let input = json!({"a": 1, "x": 2});
        assert_eq!(
            run_on(&s, "payload.remove(\"x\");", input.clone()).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            run_on(&s, "payload.remove(\"x\")", input.clone()).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            run_on(&s, "return payload.remove(\"x\");", input.clone()).unwrap(),
            json!(2)
        );
        assert_eq!(
            run_on(&s, "#{b: 3}", input.clone()).unwrap(),
            json!({"b": 3})
        );
        assert_eq!(
            run_on(
                &s,
                "if payload.a == 1 { return #{b: 3}; }\npayload.remove(\"x\");",
                input.clone()
            )
            .unwrap(),
            json!({"b": 3})
        );
        assert_eq!(
            run_on(
                &s,
                "if payload.a == 2 { return #{b: 3}; }\npayload.remove(\"x\");",
                input.clone()
            )
            .unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            run_on(&s, "payload.a = 5; payload", input).unwrap(),
            json!({"a": 5, "x": 2})
        );
    }

    #[tokio::test]
    async fn isolated_runs_leave_the_calling_thread_and_keep_the_payload() {
        let s = Arc::new(sandbox(1_000, 1_000_000));
        let ast = Arc::new(
            s.compile("payload.worker = 1; payload.remove(\"x\");")
                .unwrap()
                .ast,
        );
        let mut p = Payload::from_json(json!({"x": 1}));
        s.run_isolated(&ast, false, &mut p, &Arc::new(Meta::new()))
            .await
            .unwrap();
        assert_eq!(p.into_json().unwrap(), json!({"worker": 1}));
    }

    #[test]
    fn replace_cannot_build_a_huge_string_in_one_call() {
        let s = sandbox(5_000, 1_000_000);
        let started = Instant::now();
        let source = "let s = \"\"; s.pad(1000000, 'a'); let t = s; t.replace(\"a\", s); t.len()";
        let err = run_on(&s, source, json!({})).unwrap_err();
        assert!(
            err.message.contains("`replace` would build"),
            "{}",
            err.message
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let source = "let t = \"abc\"; t.replace(\"b\", \"xyz\"); t.replace('a', \"-\"); return t;";
        assert_eq!(run_on(&s, source, json!({})).unwrap(), json!("-xyzc"));
    }
}
