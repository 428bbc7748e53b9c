#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ one after the other, each for SECONDS (default 600), and
# prints a table: executions, coverage, crashes, timeouts and out-of-memory runs per target.
#
#   bench/fuzz.sh [SECONDS] [TARGET...]      e.g. bench/fuzz.sh 60 template csv_rows
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler. On a stable toolchain it
# sets RUSTC_BOOTSTRAP=1 so that cargo-fuzz may pass its -Z flags. Each target's corpus grows
# in fuzz/corpus/<target>/ (seeded from fuzz/seeds/<target>/, fuzz/regressions/<target>/ and
# the repository's flows/, examples/ and schemas/); findings land in fuzz/artifacts/<target>/
# and the full libFuzzer output in fuzz/logs/<target>.log. Exit status 1 when any target had
# a crash, timeout or out-of-memory run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

seconds=${1:-600}
shift || true
all=(flow_load payload_decode template csv_rows http_request)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
  exit 2
fi
case "$(rustc --version)" in
  *nightly*) ;;
  *) export RUSTC_BOOTSTRAP=1 ;;
esac

# Safe Rust: the fuzzer looks for panics, failed assertions (with debug assertions and
# overflow checks on: -a), hangs and memory blow-ups; AddressSanitizer would only halve the
# speed. Low priority, so a shared machine stays usable.
build_flags=(--sanitizer none --debug-assertions)
(cd fuzz && nice -n 19 cargo fuzz build "${build_flags[@]}")

# A seed per selector byte for the targets whose first byte picks a format or an option.
seed_with_selectors() { # dir count files...
  local dir=$1 count=$2
  shift 2
  local f s
  for f in "$@"; do
    for ((s = 0; s < count; s++)); do
      { printf "\\x$(printf %02x "$s")"; cat "$f"; } >"$dir/$(basename "$f").$s"
    done
  done
}

seed() { # target
  local target=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  for extra in "fuzz/seeds/$target" "fuzz/regressions/$target"; do
    [ -d "$extra" ] && find "$extra" -maxdepth 1 -type f -exec cp {} "$dir/" \;
  done
  case $target in
    flow_load)
      find flows examples -name '*.yaml' -exec cp {} "$dir/" \;
      # The flow examples of the docs too: each ```yaml block of docs/*.md.
      python3 - "$dir" docs/*.md <<'EOF'
import re, sys, pathlib
out = pathlib.Path(sys.argv[1])
for doc in sys.argv[2:]:
    text = pathlib.Path(doc).read_text()
    for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
        (out / f"{pathlib.Path(doc).stem}-{i}.yaml").write_text(block)
EOF
      ;;
    payload_decode)
      mapfile -t files < <(find examples schemas -type f \( -name '*.json' -o -name '*.ndjson' -o -name '*.csv' \))
      seed_with_selectors "$dir" 8 "${files[@]}"
      ;;
    csv_rows)
      mapfile -t files < <(find examples -type f -name '*.csv')
      seed_with_selectors "$dir" 14 "${files[@]}"
      ;;
  esac
}

mkdir -p fuzz/logs
summary=()
failed=0
for target in "${targets[@]}"; do
  seed "$target"
  mkdir -p "fuzz/artifacts/$target"
  log=fuzz/logs/$target.log
  echo "== $target: ${seconds}s (log: $log)" >&2
  # Fork mode with one job: a crash, timeout or OOM is saved and counted, and fuzzing goes
  # on, so one finding does not hide the next for the rest of the run.
  (cd fuzz && nice -n 19 cargo fuzz run "${build_flags[@]}" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -artifact_prefix="$root/fuzz/artifacts/$target/") >"$log" 2>&1 || true
  # The last status line of fork mode: "#EXECS: cov: C ft: F corp: N exec/s E
  # oom/timeout/crash: O/T/C time: Ts job: J dft_time: D".
  line=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 || true)
  if [ -z "$line" ]; then
    echo "$target: no status line; see $log" >&2
    tail -20 "$log" >&2
    summary+=("$(printf '%-16s %12s %8s %8s %8s  %s' "$target" "-" "-" "-" "-" "did not run")")
    failed=1
    continue
  fi
  execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$line")
  cov=$(sed -E 's/.* cov: ([0-9]+).*/\1/' <<<"$line")
  corp=$(sed -E 's/.* corp: ([0-9]+).*/\1/' <<<"$line")
  otc=$(sed -E 's#.* oom/timeout/crash: ([0-9]+/[0-9]+/[0-9]+).*#\1#' <<<"$line")
  IFS=/ read -r ooms timeouts crashes <<<"$otc"
  artifacts=$(find "fuzz/artifacts/$target" -type f | wc -l)
  summary+=("$(printf '%-16s %12s %8s %8s %8s  %s' "$target" "$execs" "$cov" "$corp" "$otc" "$artifacts artifact(s)")")
  if [ "$ooms$timeouts$crashes" != "000" ]; then failed=1; fi
done

printf '\n%-16s %12s %8s %8s %8s  %s\n' target executions cov corpus o/t/c findings
printf '%s\n' "${summary[@]}"
exit $failed
