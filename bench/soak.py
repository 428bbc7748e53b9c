#!/usr/bin/env python3
# soak.py - mixed HTTP + file load against `sluice run` for a long time, with reloads.
#
# Run (from the repository root, after `cargo build --release -p sluice`):
#     python3 bench/soak.py                      # 30 minutes, prints a table, exit 1 on a failure
#     python3 bench/soak.py --duration 180 --bin target/debug/sluice    # a short smoke run
#     python3 bench/soak.py --json --keep --http-rate 100 --file-rate 20 --reload-every 5
#
# Python 3 standard library only; Linux only (reads /proc/<pid>/status).
#
# What it does: in a fresh temp dir it writes two flows, `http` (POST /orders -> set -> file
# sink out/http/{{id}}.json) and `files` (inbox/*.json -> set -> file sink out/files/), starts
# `sluice run` there (stderr -> sluice.log) and waits until both are ready. Then, for the whole
# duration, at once:
#   - HTTP clients POST orders with unique ids at --http-rate requests/s (keep-alive);
#   - a writer drops order files into inbox/ at --file-rate files/s (hidden temp name, rename);
#   - every --reload-every seconds one of the two flow files is rewritten (temp file + rename,
#     as a deploy tool does), alternately, with a changed `set:` value, so both the HTTP
#     route and the file trigger are replaced while they work;
#   - a checker accounts for what was sent and removes it, so the disk stays small: an
#     answered request counts once its output file exists; an input file counts once it is in
#     inbox/.done/ and its output exists.
# VmRSS is sampled every second. After the load stops it waits (bounded) for the last files,
# stops sluice with SIGTERM and reports:
#   - RSS at start (idle, ready), after the warm-up (the first tenth of the run), at the end
#     (load stopped, settled), and the maximum;
#   - requests sent, failed (any answer but 200, or no answer), and answered 200 without an
#     output file ("lost");
#   - files written, lost (not both in .done/ and in out/files/ at the end), and sent to
#     .error/ or .rejected/;
#   - reloads done and reloads seen in the log, ERROR lines and panics in the log.
# It exits 1 when a request failed, anything was lost, the log has a panic, sluice did not stop
# cleanly, or RSS at the end is above the warm-up RSS by more than --max-growth-mib.

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "sluice")

HTTP_FLOW = """\
name: http
description: Soak flow - orders over HTTP, one file each (revision {rev}).
trigger:
  http: {{ path: /orders, method: POST, max_body: {max_body}KB }}
steps:
  - set:
      revision: "`{rev}`"
      via: "'http'"
  - to: out
sinks:
  out:
    file: {{ path: out/http, name: "{{{{id}}}}.json" }}
"""

FILE_FLOW = """\
name: files
description: Soak flow - order files from inbox/, one output file each (revision {rev}).
trigger:
  file:
    path: inbox
    glob: "*.json"
    format: json
    min_age: 0s
    check_interval: 50ms
    stable_checks: 2
    rescan_interval: {rescan}s
steps:
  - set:
      revision: "`{rev}`"
      source_file: "meta('file.name')"
  - to: out
sinks:
  out:
    file: {{ path: out/files, name: "{{{{id}}}}.json" }}
"""


def http_flow(rev):
    # The trigger changes too (max_body), so a reload replaces the route, not only the steps.
    return HTTP_FLOW.format(rev=rev, max_body=64 + rev % 2)


def file_flow(rev):
    # The trigger changes too (rescan_interval), so a reload restarts the folder's trigger.
    return FILE_FLOW.format(rev=rev, rescan=1 + rev % 2)


class SoakError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def log_tail(path, lines=30):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


def count_in_log(path, needles):
    counts = {n: 0 for n in needles}
    with open(path, "r", errors="replace") as f:
        for line in f:
            for n in needles:
                if n in line:
                    counts[n] += 1
    return counts


def write_atomic(path, data):
    """Writes under a hidden temporary name in the same folder, then renames into place."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def order(kind, i):
    oid = f"{kind}-{i:08d}"
    return oid, json.dumps({
        "id": oid,
        "currency": "EUR",
        "customer": {"id": f"c-{i % 997:04d}", "tier": ("gold", "silver", "standard")[i % 3]},
        "lines": [{"sku": "KETTLE-1", "qty": 1 + i % 4, "price": 39.5}, {"sku": "MUG-4", "qty": 2, "price": 7.25}],
    }, separators=(",", ":")).encode()


class Paced(threading.Thread):
    """Runs `step(i)` about `rate` times a second until `stop` is set."""

    def __init__(self, rate, stop, step):
        super().__init__(daemon=True)
        self.rate, self.stop, self.step = rate, stop, step
        self.error = None

    def run(self):
        start, i = time.monotonic(), 0
        try:
            while not self.stop.is_set():
                due = start + i / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
                    continue
                self.step(i)
                i += 1
        except Exception as e:  # reported by the main thread, never swallowed
            self.error = e


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.failed = 0
        self.failures = []  # the first few, for the report
        self.answered = set()  # ids answered 200, not yet seen in out/http
        self.http_accounted = 0
        self.files = 0
        self.pending_files = set()  # ids written to inbox/, not yet accounted for
        self.files_accounted = 0
        self.reloads = 0

    def fail(self, what):
        with self.lock:
            self.failed += 1
            if len(self.failures) < 10:
                self.failures.append(what)


def http_worker(port, stats, stop, rate, worker, workers):
    conn = [None]

    def step(i):
        n = i * workers + worker
        oid, body = order("h", n)
        with stats.lock:
            stats.requests += 1
        try:
            if conn[0] is None:
                conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn[0].request("POST", "/orders", body=body, headers={"Content-Type": "application/json"})
            resp = conn[0].getresponse()
            answer = resp.read()
            if resp.getheader("connection", "").lower() == "close":
                conn[0].close()
                conn[0] = None
        except (OSError, http.client.HTTPException) as e:
            if conn[0] is not None:
                conn[0].close()
            conn[0] = None
            stats.fail(f"{oid}: no answer: {e!r}")
            return
        if resp.status != 200:
            stats.fail(f"{oid}: status {resp.status}: {answer[:200]!r}")
            return
        with stats.lock:
            stats.answered.add(oid)

    return Paced(rate / workers, stop, step)


def file_writer(inbox, stats, stop, rate):
    def step(i):
        oid, body = order("f", i)
        write_atomic(os.path.join(inbox, f"{oid}.json"), body)
        with stats.lock:
            stats.files += 1
            stats.pending_files.add(oid)

    return Paced(rate, stop, step)


def reloader(flows, stats, stop, every):
    def step(i):
        if i == 0:
            return  # the first rewrite comes after one period, not at once
        rev = i + 1  # revision 1 is the one sluice started with
        if i % 2 == 1:
            write_atomic(os.path.join(flows, "files.yaml"), file_flow(rev).encode())
        else:
            write_atomic(os.path.join(flows, "http.yaml"), http_flow(rev).encode())
        with stats.lock:
            stats.reloads += 1

    return Paced(1.0 / every, stop, step)


def account(work, stats):
    """Counts (and removes) what has arrived: answered requests with an output, input files
    in .done/ with an output."""
    out_http, out_files = os.path.join(work, "out", "http"), os.path.join(work, "out", "files")
    done = os.path.join(work, "inbox", ".done")
    with stats.lock:
        answered = list(stats.answered)
        pending = list(stats.pending_files)
    seen_http, seen_files = [], []
    for oid in answered:
        path = os.path.join(out_http, f"{oid}.json")
        if os.path.exists(path):
            os.remove(path)
            seen_http.append(oid)
    for oid in pending:
        out, original = os.path.join(out_files, f"{oid}.json"), os.path.join(done, f"{oid}.json")
        if os.path.exists(out) and os.path.exists(original):
            os.remove(out)
            os.remove(original)
            seen_files.append(oid)
    with stats.lock:
        stats.answered.difference_update(seen_http)
        stats.http_accounted += len(seen_http)
        stats.pending_files.difference_update(seen_files)
        stats.files_accounted += len(seen_files)


def entries(folder):
    try:
        return [e.name for e in os.scandir(folder) if not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def soak(args):
    args.bin = os.path.abspath(args.bin)  # sluice runs in the temp dir
    if not os.access(args.bin, os.X_OK):
        raise SoakError(f"{args.bin} is not an executable; build it with `cargo build --release -p sluice`")
    work = tempfile.mkdtemp(prefix="sluice-soak-")
    log_path = os.path.join(work, "sluice.log")
    flows, inbox = os.path.join(work, "flows"), os.path.join(work, "inbox")
    os.makedirs(flows)
    os.makedirs(inbox)
    write_atomic(os.path.join(flows, "http.yaml"), http_flow(1).encode())
    write_atomic(os.path.join(flows, "files.yaml"), file_flow(1).encode())
    port, admin = free_port(), free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [args.bin, "run", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
         "--shutdown-grace", "10s"],
        cwd=work, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    result = {"work_dir": work, "duration_s": args.duration}
    stop = threading.Event()
    threads = []
    try:
        deadline = time.monotonic() + 60
        while count_in_log(log_path, ["flow ready"])["flow ready"] < 2:
            if proc.poll() is not None:
                raise SoakError(f"sluice exited with {proc.returncode} before both flows were ready")
            if time.monotonic() > deadline:
                raise SoakError("the two flows were not ready after 60 s")
            time.sleep(0.05)
        time.sleep(1.0)
        rss_start = rss_kib(proc.pid)
        stats = Stats()
        workers = max(1, args.http_workers)
        threads = [http_worker(port, stats, stop, args.http_rate, w, workers) for w in range(workers)]
        threads.append(file_writer(inbox, stats, stop, args.file_rate))
        threads.append(reloader(flows, stats, stop, args.reload_every))
        for t in threads:
            t.start()
        t0 = time.monotonic()
        warmup_at = t0 + args.duration / 10
        rss_warm, rss_max, samples = None, rss_start or 0, []
        next_report = t0 + 60
        while (now := time.monotonic()) < t0 + args.duration:
            if proc.poll() is not None:
                raise SoakError(f"sluice exited with {proc.returncode} during the soak")
            for t in threads:
                if t.error is not None:
                    raise SoakError(f"a load thread failed: {t.error!r}")
            rss = rss_kib(proc.pid)
            if rss is not None:
                rss_max = max(rss_max, rss)
                samples.append((round(now - t0, 1), rss))
                if rss_warm is None and now >= warmup_at:
                    rss_warm = rss
            account(work, stats)
            if now >= next_report:
                next_report += 60
                with stats.lock:
                    print(f"  {now - t0:6.0f} s  rss {rss / 1024 if rss else 0:6.1f} MiB  requests {stats.requests} "
                          f"(failed {stats.failed})  files {stats.files}  reloads {stats.reloads}",
                          file=sys.stderr)
            time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        # The last files: wait, bounded, until everything sent is accounted for.
        drain_deadline = time.monotonic() + args.drain_timeout
        while True:
            account(work, stats)
            with stats.lock:
                left = len(stats.answered) + len(stats.pending_files)
            if left == 0 or time.monotonic() > drain_deadline:
                break
            time.sleep(0.2)
        time.sleep(2.0)
        rss_end = rss_kib(proc.pid)
        if rss_end is not None:
            rss_max = max(rss_max, rss_end)
        code, killed = stop_sluice(proc)
        log.close()
        found = count_in_log(log_path, ["flow reloaded", " ERROR ", "panicked"])
        errored = entries(os.path.join(inbox, ".error")) + entries(os.path.join(inbox, ".rejected"))
        growth_mib = ((rss_end or 0) - (rss_warm or rss_start or 0)) / 1024
        result.update({
            "rss_start_mib": round((rss_start or 0) / 1024, 1),
            "rss_warm_mib": round((rss_warm or 0) / 1024, 1),
            "rss_end_mib": round((rss_end or 0) / 1024, 1),
            "rss_max_mib": round(rss_max / 1024, 1),
            "rss_growth_after_warmup_mib": round(growth_mib, 1),
            "requests": stats.requests,
            "requests_failed": stats.failed,
            "requests_lost": len(stats.answered),
            "files": stats.files,
            "files_lost": len(stats.pending_files),
            "files_error_or_rejected": len(errored),
            "reloads": stats.reloads,
            "reloads_logged": found["flow reloaded"],
            "log_errors": found[" ERROR "],
            "log_panics": found["panicked"],
            "exit_code": code,
            "killed": killed,
            "failures": stats.failures,
            "lost_examples": sorted(stats.answered)[:5] + sorted(stats.pending_files)[:5],
            "rss_samples": samples[:: max(1, len(samples) // 60)],
        })
        problems = []
        if stats.failed:
            problems.append(f"{stats.failed} requests failed")
        if stats.answered:
            problems.append(f"{len(stats.answered)} answered requests have no output")
        if stats.pending_files:
            problems.append(f"{len(stats.pending_files)} input files are not accounted for")
        if errored:
            problems.append(f"{len(errored)} input files went to .error/ or .rejected/")
        if found["panicked"]:
            problems.append("the log has a panic")
        if code != 0 or killed:
            problems.append(f"sluice did not stop cleanly (exit {code}, killed {killed})")
        if growth_mib > args.max_growth_mib:
            problems.append(f"RSS grew by {growth_mib:.1f} MiB after the warm-up (limit {args.max_growth_mib})")
        result["problems"] = problems
        return result
    except SoakError as e:
        raise SoakError(f"{e}\n--- sluice.log (tail) ---\n{log_tail(log_path)}") from None
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not log.closed:
            log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def stop_sluice(proc, grace=20.0):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=grace), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(), True


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=1800, help="seconds of load (default 1800)")
    p.add_argument("--bin", default=DEFAULT_BIN, help="the sluice binary (default target/release/sluice)")
    p.add_argument("--http-rate", type=float, default=50, help="HTTP requests per second (default 50)")
    p.add_argument("--http-workers", type=int, default=4, help="concurrent HTTP clients (default 4)")
    p.add_argument("--file-rate", type=float, default=10, help="input files per second (default 10)")
    p.add_argument("--reload-every", type=float, default=10, help="seconds between flow rewrites (default 10)")
    p.add_argument("--drain-timeout", type=float, default=60, help="seconds to wait for the last outputs (default 60)")
    p.add_argument("--max-growth-mib", type=float, default=20, help="allowed RSS growth after the warm-up (default 20)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args()
    try:
        r = soak(args)
    except SoakError as e:
        print(f"soak failed: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, indent=2))
    rows = [
        ("duration", f"{r['duration_s']:.0f} s"),
        ("RSS start / warm / end / max", f"{r['rss_start_mib']} / {r['rss_warm_mib']} / {r['rss_end_mib']} / {r['rss_max_mib']} MiB"),
        ("RSS growth after warm-up", f"{r['rss_growth_after_warmup_mib']} MiB"),
        ("requests (failed, lost)", f"{r['requests']} ({r['requests_failed']}, {r['requests_lost']})"),
        ("files (lost, .error/.rejected)", f"{r['files']} ({r['files_lost']}, {r['files_error_or_rejected']})"),
        ("reloads (logged)", f"{r['reloads']} ({r['reloads_logged']})"),
        ("log ERROR lines / panics", f"{r['log_errors']} / {r['log_panics']}"),
        ("exit", f"{r['exit_code']}{' (killed)' if r['killed'] else ''}"),
    ]
    out = sys.stderr if args.json else sys.stdout
    for k, v in rows:
        print(f"{k:32} {v}", file=out)
    for f in r["failures"]:
        print(f"  failure: {f}", file=out)
    if r["problems"]:
        print("FAIL: " + "; ".join(r["problems"]), file=out)
        return 1
    print("OK: nothing failed, nothing lost, memory flat", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
