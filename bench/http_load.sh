#!/usr/bin/env bash
# http_load.sh - the order-intake flow over HTTP (request-reply) under wrk, against the floor:
# a plain axum handler doing the same library calls (crates/sluice/examples/http_floor.rs).
#
# Run from anywhere:   bench/http_load.sh
# Options:             arguments go to bench/http_load.py, e.g.
#                      bench/http_load.sh --duration 15 --connections 32 --rounds 2 --json
#                      SKIP_BUILD=1 bench/http_load.sh   (reuse the release binaries)
# Needs: a Rust toolchain (for the build), wrk (Debian: apt-get install -y wrk; installed here
# when missing and apt-get can be used), python3 (standard library only), Linux (/proc).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"

if ! command -v wrk >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        echo "== wrk is missing: apt-get install -y wrk" >&2
        apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    else
        echo "http_load.sh: wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)" >&2
        exit 1
    fi
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== cargo build --release -p sluice --bin sluice --example http_floor" >&2
    cargo build --release -p sluice --bin sluice --example http_floor
fi

# The header goes to stderr, so that `--json` leaves stdout pure JSON.
{
    echo
    echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$("$repo/target/release/sluice" --version 2>/dev/null || echo 'sluice (version unknown)'); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo
} >&2
exec python3 "$here/http_load.py" "$@"
