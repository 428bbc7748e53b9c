#!/usr/bin/env bash
# run_all.sh - build the release binary, then run both sluice benchmarks.
#
# Run from anywhere:   bench/run_all.sh
# Options via env:     FILES=10000 ROUNDS=20 bench/run_all.sh
#                      SKIP_BUILD=1 bench/run_all.sh   (reuse target/release/sluice)
# Needs: a Rust toolchain (for the build) and python3 (standard library only); Linux (/proc).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== cargo build --release -p sluice"
    cargo build --release -p sluice
fi

echo
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(uname -sr)"
echo "$("$repo/target/release/sluice" --version 2>/dev/null || echo 'sluice (version unknown)')"

status=0
echo
echo "== file drain: python3 bench/file_drain.py --files ${FILES:-10000}"
python3 "$here/file_drain.py" --files "${FILES:-10000}" || status=1

echo
echo "== reload latency: python3 bench/reload_latency.py --rounds ${ROUNDS:-20}"
python3 "$here/reload_latency.py" --rounds "${ROUNDS:-20}" || status=1

exit "$status"
