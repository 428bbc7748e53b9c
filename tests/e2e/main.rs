//! The end-to-end tests, in one binary so that the support code is compiled and linked once.
//!
//! Each module was its own test binary before; a test is named `<module>::<test>` (run one
//! file's tests with `cargo test --test e2e brokers_redis::`). They drive the real `sluice`
//! binary as child processes; `fuzz_regressions` alone calls the crates directly.
//!
//! The harness runs tests on parallel threads of this one process. Nothing here is
//! process-global: every test has its own sandbox folder, ports, names and child processes,
//! and the gate in `support::gate` decides how many sandboxes run at once (and lets a test
//! that measures time or memory run alone).

mod support;

mod admin;
mod admin_trust;
mod bad_input;
mod body_trust;
mod brokers_amqp;
mod brokers_kafka;
mod brokers_mariadb;
mod brokers_mqtt;
mod brokers_mqtt_bad_input;
mod brokers_mqtt_tls;
mod brokers_nats;
mod brokers_postgres;
mod brokers_redis;
mod brokers_tls;
mod cli;
mod contract_formats;
mod crash_recovery;
mod dry_runs;
mod eip_circuit_breaker;
mod eip_dedupe;
mod eip_split_aggregate;
mod eip_steps;
mod eip_throttle;
mod file_drop;
mod file_trust;
mod fuzz_regressions;
mod hot_reload;
mod http_reload;
mod http_sink;
mod http_trigger;
mod listener_trust;
mod named_steps;
mod openapi;
mod operate_deploy;
mod operate_dlq;
mod operate_graph;
mod operate_lag;
mod operate_metrics;
mod operate_tap;
mod ordering;
mod outbound_trust;
mod readme_samples;
mod reference_docs;
mod reload_trust;
mod scaffold;
mod scale_out;
mod script_sandbox;
mod script_trust;
mod sftp;
mod shutdown;
mod sink_declare;
mod steps_stop;
mod test_mocks;
mod xml_format;
