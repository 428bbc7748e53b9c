//! The order-intake pipeline (validate → transform → script → route → serialize) on
//! ~250-byte orders: the engine, side by side with a plain loop making the same library
//! calls in the straightforward way (serde conversions between the libraries).
//!
//! Run: `cargo bench -p sluice-engine --bench pipeline`

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use sluice_engine::{
    BuildContext, Connectors, FlowError, Message, Meta, Outgoing, Payload, Sink, Trigger, compile,
};
use sluice_engine::{SinkInfo, TriggerInfo};
use sluice_flow::{Diagnostic, SinkConfig, Spanned, TriggerConfig, parse_flow};
#[path = "../../../bench/floor.rs"]
mod floor;
use floor::{jmes_to_json, json_to_jmes, json_to_rhai, rhai_to_json, search};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id", "currency", "customer", "lines"],
  "properties": {
    "id": {"type": "string"},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "customer": {"type": "object", "required": ["id", "tier"],
                 "properties": {"id": {"type": "string"}, "country": {"type": "string"},
                                "tier": {"enum": ["gold", "silver", "standard"]}}},
    "lines": {"type": "array", "items": {"type": "object", "required": ["sku", "qty", "price"],
              "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1},
                             "price": {"type": "number", "minimum": 0}}}}
  }
}"#;

const SCRIPT: &str = r#"
let total = 0.0;
for line in payload.lines {
    line.total = line.qty.to_float() * line.price;
    total += line.total;
}
payload.total = total;
payload.priority = if payload.customer.tier == "gold" || total >= 1000.0 { "high" } else { "normal" };
"#;

const TRANSFORM: &str = "{order_id: id, currency: currency, customer: customer, lines: lines}";
const WHEN: &str = "priority == 'high'";

fn order() -> Value {
    json!({
        "id": "o-10017", "currency": "EUR",
        "customer": {"id": "c-981", "country": "DE", "tier": "silver"},
        "lines": [
            {"sku": "A1-RED", "qty": 2, "price": 9.5},
            {"sku": "B7-XL", "qty": 1, "price": 120.0},
            {"sku": "C3", "qty": 5, "price": 3.25}
        ],
        "note": "leave at the back door"
    })
}

struct NullSink;

#[async_trait]
impl Sink for NullSink {
    async fn write(&self, _out: &mut Outgoing) -> Result<(), FlowError> {
        Ok(())
    }
    fn target(&self, _out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(String::new())
    }
}

struct NullTrigger;

#[async_trait]
impl Trigger for NullTrigger {
    async fn run(
        self: Box<Self>,
        _inlet: sluice_engine::Inlet,
        _stop: tokio_util::sync::CancellationToken,
    ) {
    }
}

struct NullConnectors;

impl Connectors for NullConnectors {
    fn trigger_info(&self, _: &Spanned<TriggerConfig>, _: &BuildContext<'_>) -> TriggerInfo {
        TriggerInfo::default()
    }
    fn sink_info(&self, _: &Spanned<SinkConfig>) -> SinkInfo {
        SinkInfo::default()
    }

    fn sink(
        &self,
        _: &str,
        _: &Spanned<SinkConfig>,
        _: &BuildContext<'_>,
    ) -> Result<Arc<dyn Sink>, Diagnostic> {
        Ok(Arc::new(NullSink))
    }
    fn trigger(
        &self,
        _: &Spanned<TriggerConfig>,
        _: &BuildContext<'_>,
    ) -> Result<Box<dyn Trigger>, Diagnostic> {
        Ok(Box::new(NullTrigger))
    }
}

fn engine_flow(dir: &Path) -> sluice_engine::CompiledFlow {
    std::fs::write(dir.join("order.v1.json"), SCHEMA).unwrap();
    let script = SCRIPT
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect::<String>();
    let yaml = format!(
        "name: bench\ntrigger:\n  file: {{ path: inbox }}\nsteps:\n  - validate: order.v1\n  - transform: \"{TRANSFORM}\"\n  - script: |\n{script}  - route:\n      - when: \"{WHEN}\"\n        to: express\n      - else: standard\nsinks:\n  express: {{ stdout: {{}} }}\n  standard: {{ stdout: {{}} }}\n"
    );
    let loaded = parse_flow(Path::new("bench.yaml"), yaml).unwrap();
    let folders = sluice_engine::Folders {
        schemas: dir.to_owned(),
        scripts: dir.to_owned(),
    };
    compile(&loaded, &folders, &NullConnectors).unwrap_or_else(|d| panic!("{d:?}"))
}

fn pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let flow = engine_flow(dir.path());
    let input = order();
    assert!(serde_json::to_vec(&input).unwrap().len() >= 240);

    // The plain loop: the same libraries, each fed through serde the usual way.
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let transform = jmespath::compile(TRANSFORM).unwrap();
    let when = jmespath::compile(WHEN).unwrap();
    let rhai_engine = rhai::Engine::new();
    let ast = rhai_engine.compile(SCRIPT).unwrap();
    // The same sandbox settings as the engine's (limits, deadline check), so that the
    // comparison is between ways of running the same work.
    let far_deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    let mut sandboxed_engine = rhai::Engine::new();
    sandboxed_engine
        .set_max_operations(1_000_000)
        .set_max_call_levels(32)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(1 << 20)
        .set_max_array_size(100_000)
        .set_max_map_size(10_000)
        .on_progress(move |ops| {
            if ops % 256 == 0 && std::time::Instant::now() >= far_deadline {
                Some(rhai::Dynamic::UNIT)
            } else {
                None
            }
        });
    let run_plain = |rhai_engine: &rhai::Engine, order: &Value| -> Vec<u8> {
        assert!(validator.is_valid(order));
        let data = json_to_jmes(order);
        let shaped = jmes_to_json(&search(&transform, &data).unwrap()).unwrap();
        let mut scope = rhai::Scope::new();
        scope.push_dynamic("payload", json_to_rhai(&shaped).unwrap());
        rhai_engine.run_ast_with_scope(&mut scope, &ast).unwrap();
        let priced: Value =
            rhai_to_json(&scope.get_value::<rhai::Dynamic>("payload").unwrap()).unwrap();
        let express = search(&when, &json_to_jmes(&priced)).unwrap().is_truthy();
        let mut bytes = serde_json::to_vec(&priced).unwrap();
        bytes.push(express as u8);
        bytes
    };
    let plain = |order: &Value| run_plain(&rhai_engine, order);
    let plain_sandboxed = |order: &Value| run_plain(&sandboxed_engine, order);

    // The script step hands its run to the blocking pool, as under `sluice run`; the cost of
    // that hand-over is part of what this measures.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let engine = |order: &Value| -> Vec<u8> {
        let message = Message::new("bench", order.clone(), Meta::new());
        let executed = runtime.block_on(flow.execute(message)).unwrap();
        let delivery = &executed.deliveries[0];
        let mut bytes = delivery.payload.to_json_vec().unwrap();
        bytes.push((delivery.sinks[0] == "express") as u8);
        bytes
    };

    // Both produce the same document.
    let a: Value = serde_json::from_slice(&plain(&input)[..plain(&input).len() - 1]).unwrap();
    let b: Value = serde_json::from_slice(&engine(&input)[..engine(&input).len() - 1]).unwrap();
    assert_eq!(a, b);

    // `PIPELINE_ONLY=engine|plain_loop|plain_loop_sandboxed PIPELINE_ITERATIONS=n` runs one
    // variant n times and exits: for instruction counts under `valgrind --tool=callgrind`,
    // which are repeatable on a noisy machine where timings are not.
    if let Ok(only) = std::env::var("PIPELINE_ONLY") {
        let n: usize = std::env::var("PIPELINE_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        for _ in 0..n {
            let out = match only.as_str() {
                "engine" => engine(&input),
                "plain_loop" => plain(&input),
                _ => plain_sandboxed(&input),
            };
            black_box(out);
        }
        std::process::exit(0);
    }

    let mut group = c.benchmark_group("order-intake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("engine", |bench| {
        bench.iter(|| black_box(engine(black_box(&input))))
    });
    group.bench_function("plain_loop", |bench| {
        bench.iter(|| black_box(plain(black_box(&input))))
    });
    group.bench_function("plain_loop_sandboxed", |bench| {
        bench.iter(|| black_box(plain_sandboxed(black_box(&input))))
    });
    group.finish();

    // What running scripts off the async threads costs per run: the same script inline on
    // the calling thread (as before) and handed to the blocking pool under the flow's permit.
    let sandbox = Arc::new(sluice_engine::Sandbox::new(
        "bench",
        &sluice_flow::ScriptLimits::default(),
    ));
    let script_ast = Arc::new(sandbox.compile(SCRIPT).unwrap().ast);
    let meta = Arc::new(Meta::new());
    let mut group = c.benchmark_group("script-handover");
    group.throughput(Throughput::Elements(1));
    group.bench_function("inline", |bench| {
        bench.iter(|| {
            let mut payload = Payload::from_json(input.clone());
            sandbox
                .run(&script_ast, false, &mut payload, &meta)
                .unwrap();
            black_box(payload)
        })
    });
    group.bench_function("isolated", |bench| {
        bench.iter(|| {
            let mut payload = Payload::from_json(input.clone());
            runtime
                .block_on(sandbox.run_isolated(&script_ast, false, &mut payload, &meta))
                .unwrap();
            black_box(payload)
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
