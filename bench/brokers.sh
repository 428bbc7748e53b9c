#!/usr/bin/env bash
# brokers.sh - broker throughput: sluice against the floor (a minimal consumer/republisher
# written directly against the same client crate), in the same run, ~250-byte messages.
#
# Run from anywhere:   bench/brokers.sh
# Options via env:     N=20000 INFLIGHT=64 bench/brokers.sh
#                      SKIP_BUILD=1 bench/brokers.sh   (reuse the release build)
# Needs: NATS JetStream (4222), RabbitMQ (5672, guest/guest), PostgreSQL (5432, database test),
# and for the Kafka case a broker: this script starts .ci/kafka-broker.sh's noida-db (PyPI) when
# SLUICE_KAFKA_BROKERS is not set, and stops it at the end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== cargo build --release (sluice and the floor, examples/broker_bench/)"
    cargo build --release -p sluice -p sluice-connectors --bin sluice --example broker_bench
fi

bench="$repo/target/release/examples/broker_bench"
sluice="$repo/target/release/sluice"
args=(--sluice "$sluice" -n "${N:-20000}" -c "${INFLIGHT:-64}")

if [[ -z "${SLUICE_KAFKA_BROKERS:-}" ]]; then
    trap '.ci/kafka-broker.sh stop target/tmp/kafka-broker-bench' EXIT
    eval "$(.ci/kafka-broker.sh start target/tmp/kafka-broker-bench)"
fi

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
for case in jetstream amqp kafka postgres; do
    echo
    echo "== $case"
    "$bench" "$case" "${args[@]}" || status=1
done
exit "$status"
