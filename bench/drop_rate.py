#!/usr/bin/env python3
# drop_rate.py - files dropped one by one at a steady rate: is every one delivered, and how
# long after it was written?
#
# Run (from the repository root):
#     cargo build --release -p sluice --bin sluice --features bench-floors --example drop_writer
#     python3 bench/drop_rate.py --rate 5000 --files 20000 --dir /dev/shm [--bin-as after=PATH]...
#
# For each sluice binary, in a fresh working folder with the sample flow
# flows/order-intake.yaml (and its schemas and script), it starts `sluice run`, waits for
# `flow ready`, and runs crates/sluice/examples/drop_writer.rs, which writes N order files
# into inbox/orders/ one by one (create, write, close: no temporary name) at --rate files/s
# and records when each was closed. It then waits (bounded) until all N are in
# inbox/orders/.done/ and their outputs in outbox/, and reports per file the latency from
# "closed by the writer" to "output written" (the output file's mtime), as min, median, p90,
# p99 and max. The flow's stability gate (min_age 500ms, check_interval 200ms, stable_checks
# 3) holds every file for its settle window first: that is the floor of the latency.
#
# Python 3 standard library only; Linux only.

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import file_drain as fd  # noqa: E402

DEFAULT_WRITER = os.path.join(fd.REPO, "target", "release", "examples", "drop_writer")


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def outputs_by_name(work):
    """{order id: output mtime ns} of both sinks' folders."""
    found = {}
    for sink in ("express", "standard"):
        with os.scandir(os.path.join(work, "outbox", sink)) as it:
            for e in it:
                if not e.name.startswith(".") and e.name.endswith(".json"):
                    found[e.name[: -len(".json")]] = e.stat().st_mtime_ns
    return found


def one(label, binary, args):
    work = fd.compare_prepare(0, args.dir)
    inbox = os.path.join(work, "inbox", "orders")
    log_path = os.path.join(work, "run.log")
    written_log = os.path.join(work, "written.txt")
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([binary, "run"], cwd=work, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log)
            try:
                fd.wait_for_log(proc, log_path, "flow ready", args.startup_timeout)
                cpu0 = fd.proc_cpu_split(proc.pid)
                writer = subprocess.run([args.writer, "--dir", inbox, "--files", str(args.files),
                                         "--rate", str(args.rate), "--log", written_log],
                                        capture_output=True, text=True)
                if writer.returncode != 0:
                    raise fd.BenchError(f"drop_writer failed: {writer.stderr}")
                deadline = time.monotonic() + args.timeout
                done = os.path.join(inbox, ".done")
                while fd.count_entries(done) < args.files:
                    if proc.poll() is not None:
                        raise fd.BenchError(f"{label} exited with {proc.returncode}\n{fd.log_tail(log_path)}")
                    if time.monotonic() > deadline:
                        raise fd.BenchError(f"{label}: {fd.count_entries(done)} of {args.files} done after "
                                            f"{args.timeout} s\n{fd.log_tail(log_path)}")
                    time.sleep(0.05)
                cpu1 = fd.proc_cpu_split(proc.pid)
                hwm = fd.proc_status(proc.pid)["VmHWM"]
            finally:
                code, _, killed = fd.stop(proc)
        if code != 0 or killed:
            raise fd.BenchError(f"{label}: exit {code} after SIGTERM (killed: {killed})\n{fd.log_tail(log_path)}")
        outputs = outputs_by_name(work)
        latencies, missing = [], 0
        with open(written_log) as f:
            for line in f:
                name, at = line.split()
                out = outputs.get(name[: -len(".json")])
                if out is None:
                    missing += 1
                else:
                    latencies.append((out - int(at)) / 1e6)
        if missing:
            raise fd.BenchError(f"{label}: {missing} of {args.files} files have no output")
        latencies.sort()
        rate = writer.stderr.strip().rsplit("(", 1)[-1].split()[0]
        return {"label": label, "files": args.files, "rate_asked": args.rate, "rate_written": float(rate),
                "lost": missing, "latency_ms": {
                    "min": round(latencies[0], 1), "median": round(percentile(latencies, 50), 1),
                    "p90": round(percentile(latencies, 90), 1), "p99": round(percentile(latencies, 99), 1),
                    "max": round(latencies[-1], 1)},
                "user_s": round(cpu1[0] - cpu0[0], 2), "system_s": round(cpu1[1] - cpu0[1], 2),
                "peak_rss_kib": hwm}
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description="Files dropped one by one at a rate: delivered, and how fast?")
    p.add_argument("--rate", type=float, default=5000, help="files per second (default 5000)")
    p.add_argument("--files", type=int, default=20_000, help="files to write (default 20000)")
    p.add_argument("--bin", default=fd.DEFAULT_BIN, help="sluice binary")
    p.add_argument("--bin-as", dest="bin_list", action="append", metavar="LABEL=PATH",
                   help="a sluice binary and its label; repeat to compare builds")
    p.add_argument("--writer", default=DEFAULT_WRITER, help="the drop_writer example")
    p.add_argument("--dir", default=None, help="where the working folders are made (e.g. /dev/shm)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--timeout", type=float, default=120, help="max seconds after the last write")
    p.add_argument("--startup-timeout", type=float, default=30)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    labels = dict(b.split("=", 1) if "=" in b else ("sluice", b) for b in (args.bin_list or [f"sluice={args.bin}"]))
    args.writer = os.path.abspath(args.writer)
    for path in [args.writer, *labels.values()]:
        if not os.access(path, os.X_OK):
            print(f"drop_rate: {path} is not an executable (see the build command at the top of this file)",
                  file=sys.stderr)
            return 1
    runs = []
    try:
        for r in range(1, args.rounds + 1):
            for label, path in labels.items():
                res = one(label, os.path.abspath(path), args)
                res["round"] = r
                runs.append(res)
                lat = res["latency_ms"]
                print(f"round {r} {label:>8}: {res['files']} files at {res['rate_written']:.0f}/s, lost {res['lost']}, "
                      f"latency ms min {lat['min']} / median {lat['median']} / p90 {lat['p90']} / p99 {lat['p99']} / "
                      f"max {lat['max']}, user {res['user_s']} s, sys {res['system_s']} s, "
                      f"peak RSS {fd.mib(res['peak_rss_kib'])}", file=sys.stderr)
    except fd.BenchError as e:
        print(f"drop_rate: FAILED: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
