#!/usr/bin/env python3
# reload_latency.py - how long `sluice run` takes from saving a flow file to `flow reloaded`.
#
# Run (from the repository root, after `cargo build --release -p sluice`):
#     python3 bench/reload_latency.py                 # 20 rounds, prints a table
#     python3 bench/reload_latency.py --rounds 50 --json
#     python3 bench/reload_latency.py --bin path/to/sluice --keep
#
# Python 3 standard library only; Linux/Unix.
#
# What it does: in a fresh temp dir it writes flows/reload-bench.yaml (file trigger on inbox/,
# `set: {version: "`1`"}`, file sink outbox/), starts `sluice run` there (stderr -> sluice.log)
# and waits for `flow ready`. Then, R times, it rewrites the flow with a new version value and
# measures the time from the start of the write to the first new log line containing
# `flow reloaded` and `flow=reload-bench` (the log is polled every 2 ms). Odd rounds save like
# an editor (write flows/.reload-bench.yaml.tmp, then rename over the flow); even rounds write
# the flow file in place (truncate + write). After the last round a file is dropped into inbox/
# and its output must carry the last version. SIGTERM (SIGKILL after 10 s) and cleanup at the end.

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "sluice")
NAME = "reload-bench"

FLOW = """\
name: reload-bench
description: Benchmark flow for hot reload; only the version value changes between saves.
trigger:
  file:
    path: inbox
    glob: "*.json"
    min_age: 0s
    check_interval: 50ms
    stable_checks: 2
steps:
  - set: {{ version: "`{version}`" }}
  - to: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{id}}}}.json" }}
"""


class BenchError(Exception):
    pass


class LogTail:
    """Reads the log incrementally, line by line."""

    def __init__(self, path):
        self.path, self.offset, self.buf = path, 0, ""

    def new_lines(self):
        with open(self.path, "r", errors="replace") as f:
            f.seek(self.offset)
            chunk = f.read()
            self.offset = f.tell()
        if not chunk:
            return []
        self.buf += chunk
        lines = self.buf.split("\n")
        self.buf = lines.pop()
        return lines

    def tail(self, n=30):
        try:
            with open(self.path, "r", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError as e:
            return f"(cannot read {self.path}: {e})"


def stop(proc, grace=10.0):
    """SIGTERM, then SIGKILL after `grace` s; returns (exit code, killed?)."""
    if proc.poll() is not None:
        return proc.returncode, False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        return proc.returncode, False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return proc.returncode, True


def write_flow(path, version, mode):
    data = FLOW.format(version=version)
    if mode == "rename":
        tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
        with open(tmp, "w") as f:
            f.write(data)
        os.rename(tmp, path)
    else:
        with open(path, "w") as f:
            f.write(data)


def percentile(sorted_values, q):
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, -(-q * len(sorted_values) // 100) - 1))
    return sorted_values[int(k)]


def summary(values):
    v = sorted(values)
    if not v:
        return {"n": 0}
    return {"n": len(v), "min_ms": round(v[0], 1), "median_ms": round(statistics.median(v), 1),
            "p90_ms": round(percentile(v, 90), 1), "max_ms": round(v[-1], 1)}


def bench(args):
    if not os.access(args.bin, os.X_OK):
        raise BenchError(f"{args.bin} is not an executable; build it with `cargo build --release -p sluice`")
    work = tempfile.mkdtemp(prefix="sluice-reload-")
    log_path = os.path.join(work, "sluice.log")
    flow_path = os.path.join(work, "flows", f"{NAME}.yaml")
    os.makedirs(os.path.dirname(flow_path))
    write_flow(flow_path, 1, "inplace")
    log = open(log_path, "wb")
    tail = LogTail(log_path)
    proc = None
    try:
        proc = subprocess.Popen([args.bin, "run"], cwd=work, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + args.startup_timeout
        ready = False
        while not ready:
            ready = any("flow ready" in l and f"flow={NAME}" in l for l in tail.new_lines())
            if proc.poll() is not None:
                raise BenchError(f"sluice exited with code {proc.returncode} before `flow ready`")
            if not ready and time.monotonic() > deadline:
                raise BenchError(f"no `flow ready` after {args.startup_timeout} s")
            time.sleep(0.01)
        time.sleep(args.gap)

        rounds = []
        version = 1
        for r in range(1, args.rounds + 1):
            version += 1
            mode = "rename" if r % 2 == 1 else "inplace"
            tail.new_lines()  # skip anything logged before this write
            t0 = time.monotonic()
            write_flow(flow_path, version, mode)
            found, other = None, []
            limit = t0 + args.round_timeout
            while found is None:
                now = time.monotonic()
                for line in tail.new_lines():
                    if "flow reloaded" in line and f"flow={NAME}" in line:
                        found = (now, line)
                        break
                    if line.strip():
                        other.append(line)
                if found is None:
                    if proc.poll() is not None:
                        raise BenchError(f"sluice exited with code {proc.returncode} in round {r}")
                    if now > limit:
                        break
                    time.sleep(0.002)
            entry = {"round": r, "mode": mode, "version": version, "other_log_lines": other}
            if found:
                entry["latency_ms"] = (found[0] - t0) * 1000
                entry["trigger_restarted"] = "trigger restarted" in found[1]
            else:
                entry["latency_ms"] = None
            # Anything logged shortly after (a second reload, a failure) is recorded too.
            time.sleep(args.gap)
            entry["later_log_lines"] = [l for l in tail.new_lines() if l.strip()]
            rounds.append(entry)

        # The last version must be the one that runs.
        check = {"expected_version": version}
        inbox, outbox = os.path.join(work, "inbox"), os.path.join(work, "outbox")
        tmp = os.path.join(inbox, ".check.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"id": "check"}, f)
        os.rename(tmp, os.path.join(inbox, "check.json"))
        out = os.path.join(outbox, "check.json")
        limit = time.monotonic() + args.round_timeout
        while not os.path.exists(out):
            if time.monotonic() > limit:
                raise BenchError(f"{out} not written within {args.round_timeout} s after the last round")
            time.sleep(0.01)
        with open(out) as f:
            check["output"] = json.load(f)
        check["ok"] = check["output"].get("version") == version

        code, killed = stop(proc)
        proc = None
        return {"rounds": rounds, "check": check, "exit_code": code, "killed": killed}
    except BenchError as e:
        raise BenchError(f"{e}\n--- tail of {log_path} ---\n{tail.tail()}") from None
    finally:
        if proc is not None:
            stop(proc)
        log.close()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(res):
    rounds = res["rounds"]
    ok = [x["latency_ms"] for x in rounds if x["latency_ms"] is not None]
    out = {
        "rounds": len(rounds),
        "reloaded": len(ok),
        "missed": [x["round"] for x in rounds if x["latency_ms"] is None],
        "all": summary(ok),
        "rename": summary([x["latency_ms"] for x in rounds if x["mode"] == "rename" and x["latency_ms"] is not None]),
        "inplace": summary([x["latency_ms"] for x in rounds if x["mode"] == "inplace" and x["latency_ms"] is not None]),
        "trigger_restarted_rounds": [x["round"] for x in rounds if x.get("trigger_restarted")],
        "unexpected_log_lines": {x["round"]: x["other_log_lines"] + x["later_log_lines"]
                                 for x in rounds if x["other_log_lines"] or x["later_log_lines"]},
        "final_version_check": res["check"],
        "per_round_ms": [None if x["latency_ms"] is None else round(x["latency_ms"], 1) for x in rounds],
        "exit_code": res["exit_code"],
        "killed": res["killed"],
    }
    return out


def table(s):
    lines = [f"{'save mode':<10} {'n':>3} {'min':>8} {'median':>8} {'p90':>8} {'max':>8}   (ms)"]
    for key in ("all", "rename", "inplace"):
        m = s[key]
        if m["n"]:
            lines.append(f"{key:<10} {m['n']:>3} {m['min_ms']:>8.1f} {m['median_ms']:>8.1f} "
                         f"{m['p90_ms']:>8.1f} {m['max_ms']:>8.1f}")
        else:
            lines.append(f"{key:<10} {0:>3}   (no reload logged)")
    lines.append(f"reloads logged: {s['reloaded']}/{s['rounds']}"
                 + (f"; missed rounds {s['missed']}" if s["missed"] else ""))
    if s["trigger_restarted_rounds"]:
        lines.append(f"`flow reloaded (trigger restarted)` in rounds {s['trigger_restarted_rounds']}")
    for r, extra in s["unexpected_log_lines"].items():
        lines.append(f"round {r}: other log lines:")
        lines.extend("    " + l for l in extra)
    c = s["final_version_check"]
    lines.append(f"final version check: {'ok' if c['ok'] else 'FAILED'} "
                 f"(expected version {c['expected_version']}, output {json.dumps(c['output'])})")
    lines.append(f"stop (SIGTERM): exit {s['exit_code']}" + (" (SIGKILLed)" if s["killed"] else ""))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description="Benchmark hot-reload latency of `sluice run`.")
    p.add_argument("--rounds", type=int, default=20, help="number of saves (default 20)")
    p.add_argument("--bin", default=DEFAULT_BIN, help=f"sluice binary (default {DEFAULT_BIN})")
    p.add_argument("--gap", type=float, default=0.3, help="pause after each reload, seconds (default 0.3)")
    p.add_argument("--round-timeout", type=float, default=10, help="max seconds to wait per round (default 10)")
    p.add_argument("--startup-timeout", type=float, default=30, help="max seconds until `flow ready` (default 30)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout (table goes to stderr)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    try:
        s = report(bench(args))
    except BenchError as e:
        print(f"reload_latency: FAILED: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(table(s), file=sys.stderr)
        print(json.dumps(s, indent=2))
    else:
        print(table(s))
    return 0 if s["reloaded"] == s["rounds"] and s["final_version_check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
