#!/usr/bin/env python3
# file_drain.py - how fast `sluice run` drains a folder of small JSON files.
#
# Run (from the repository root, after `cargo build --release -p sluice`):
#     python3 bench/file_drain.py                 # 10,000 files, prints a table
#     python3 bench/file_drain.py --files 2000 --json
#     python3 bench/file_drain.py --prefill       # files written before sluice starts
#     python3 bench/file_drain.py --bin path/to/sluice --timeout 600 --keep
#
# Python 3 standard library only; Linux only (reads /proc/<pid>/status).
#
# What it does: in a fresh temp dir it writes flows/drain.yaml (file trigger on inbox/,
# transform + set, file sink outbox/), starts `sluice run` there (stderr -> sluice.log),
# waits for `flow ready`, samples the idle memory, then writes N order files into inbox/
# as fast as it can (inbox/.<name>.tmp, then rename) and measures the time from the first
# file appearing until outbox/ holds N outputs AND inbox/.done/ holds N originals.
# VmRSS is sampled every 100 ms during the drain; VmHWM is read idle and at the end.
# The process is stopped with SIGTERM (SIGKILL after 10 s) and the temp dir removed.
# With --prefill the N files are written before sluice starts and the clock starts at spawn,
# so the Python writer (about 0.5 ms per file here) does not limit the result.
#
# With --compare (see bench/README.md, "Side by side with the floor") it runs the sample flow
# flows/order-intake.yaml instead, on N prefilled files, against the plain-program floor
# crates/sluice/examples/drain_floor.rs, one after the other in each round:
#     python3 bench/file_drain.py --compare --files 10000 --rounds 3 \
#         --bin-as before=/tmp/sluice-before --bin-as after=target/release/sluice

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "sluice")

FLOW = """\
name: drain
description: Benchmark flow - take order files, reshape them, write one file per order.
trigger:
  file:
    path: inbox
    glob: "*.json"
    format: json
    min_age: 0s
    check_interval: 50ms
    stable_checks: 2
steps:
  - transform: "{id: id, customer: customer, lines: lines, currency: currency}"
  - set:
      source_file: "meta('file.name')"
      line_count: "length(lines)"
  - to: out
sinks:
  out:
    file: { path: outbox, name: "{{id}}.json" }
"""


class BenchError(Exception):
    pass


def log_tail(log_path, lines=30):
    try:
        with open(log_path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read {log_path}: {e})"


def proc_status(pid):
    """VmRSS and VmHWM of pid in KiB (None when unavailable)."""
    out = {"VmRSS": None, "VmHWM": None}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def proc_cpu_seconds(pid):
    """utime + stime of pid in seconds (None when unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def wait_for_log(proc, log_path, needle, timeout):
    """Waits until a line containing `needle` is in the log; returns that line."""
    deadline = time.monotonic() + timeout
    offset, buf = 0, ""
    while True:
        with open(log_path, "r", errors="replace") as f:
            f.seek(offset)
            chunk = f.read()
            offset = f.tell()
        buf += chunk
        lines = buf.split("\n")
        buf = lines.pop()
        for line in lines:
            if needle in line:
                return line
        if proc.poll() is not None:
            raise BenchError(f"sluice exited with code {proc.returncode} before logging `{needle}`")
        if time.monotonic() > deadline:
            raise BenchError(f"no `{needle}` in the log after {timeout} s")
        time.sleep(0.01)


def stop(proc, grace=10.0):
    """SIGTERM, then SIGKILL after `grace` s; returns (exit code, seconds taken, killed?)."""
    if proc.poll() is not None:
        return proc.returncode, 0.0, False
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        return proc.returncode, time.monotonic() - t0, False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return proc.returncode, time.monotonic() - t0, True


def order(i):
    oid = f"o-{i:06d}"
    doc = {
        "id": oid,
        "currency": "EUR",
        "customer": {"id": f"c-{i % 997:04d}", "country": "DE", "tier": ("gold", "silver", "standard")[i % 3]},
        "lines": [
            {"sku": "KETTLE-1", "qty": 1 + i % 4, "price": 39.5},
            {"sku": "MUG-4", "qty": 2, "price": 7.25},
        ],
        "note": "benchmark order padded to ~250 bytes",
    }
    return oid, json.dumps(doc).encode()


def count_json(folder):
    """Number of *.json entries in folder that are not dotfiles (sink temp files are dotfiles)."""
    n = 0
    try:
        with os.scandir(folder) as it:
            for e in it:
                if not e.name.startswith(".") and e.name.endswith(".json"):
                    n += 1
    except FileNotFoundError:
        pass
    return n


def count_entries(folder):
    try:
        return sum(1 for _ in os.scandir(folder))
    except FileNotFoundError:
        return 0


class RssSampler(threading.Thread):
    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.max_rss = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            rss = proc_status(self.pid)["VmRSS"]
            if rss is not None:
                self.max_rss = max(self.max_rss, rss)
                self.samples += 1
            self._halt.wait(self.interval)

    def finish(self):
        self._halt.set()
        self.join()


def bench(args):
    if not os.access(args.bin, os.X_OK):
        raise BenchError(f"{args.bin} is not an executable; build it with `cargo build --release -p sluice`")
    work = tempfile.mkdtemp(prefix="sluice-drain-")
    log_path = os.path.join(work, "sluice.log")
    inbox, outbox = os.path.join(work, "inbox"), os.path.join(work, "outbox")
    done = os.path.join(inbox, ".done")
    os.makedirs(os.path.join(work, "flows"))
    with open(os.path.join(work, "flows", "drain.yaml"), "w") as f:
        f.write(FLOW)
    n = args.files
    payloads = [order(i) for i in range(1, n + 1)]  # built before the clock starts
    result = {"mode": "prefill" if args.prefill else "live", "files": n, "bytes_per_file_avg": round(sum(len(p) for _, p in payloads) / n, 1)}
    proc = None
    log = open(log_path, "wb")
    try:
        def write_all():
            t_first = None
            for name, data in payloads:
                tmp = os.path.join(inbox, f".{name}.json.tmp")
                with open(tmp, "wb") as f:
                    f.write(data)
                os.rename(tmp, os.path.join(inbox, f"{name}.json"))
                if t_first is None:
                    t_first = time.monotonic()
            return t_first, time.monotonic()

        if args.prefill:
            # The files are all there before sluice starts: the clock starts at spawn, and
            # the writer's speed no longer limits the result.
            os.makedirs(inbox)
            t_w0, t_written = write_all()
            result["prefill_write_s"] = round(t_written - t_w0, 3)
        proc = subprocess.Popen([args.bin, "run"], cwd=work, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)
        t_start = time.monotonic()
        if args.prefill:
            sampler = RssSampler(proc.pid, 0.1)
            sampler.start()
            cpu0 = 0.0  # the whole life of the process
            t_first = t_written = t_start
            wait_for_log(proc, log_path, "flow ready", args.startup_timeout)
            result["startup_s"] = round(time.monotonic() - t_start, 3)
            result["idle_vmrss_kib"] = result["idle_vmhwm_kib"] = None
        else:
            wait_for_log(proc, log_path, "flow ready", args.startup_timeout)
            result["startup_s"] = round(time.monotonic() - t_start, 3)
            time.sleep(args.idle)  # let it settle before sampling the idle footprint
            idle = proc_status(proc.pid)
            result["idle_vmrss_kib"], result["idle_vmhwm_kib"] = idle["VmRSS"], idle["VmHWM"]
            cpu0 = proc_cpu_seconds(proc.pid)
            sampler = RssSampler(proc.pid, 0.1)
            sampler.start()
            t_first, t_written = write_all()

        deadline = t_first + args.timeout
        t_outbox = None
        while True:
            outs = count_json(outbox)
            if outs >= n and t_outbox is None:
                t_outbox = time.monotonic()
            if t_outbox is not None and count_json(done) >= n:
                t_end = time.monotonic()
                break
            bad = count_entries(os.path.join(inbox, ".error")) + count_entries(os.path.join(inbox, ".rejected"))
            if bad:
                raise BenchError(f"{bad} entries in inbox/.error or inbox/.rejected (outbox has {outs}/{n})")
            if proc.poll() is not None:
                raise BenchError(f"sluice exited with code {proc.returncode} during the drain ({outs}/{n} outputs)")
            if time.monotonic() > deadline:
                raise BenchError(f"drain not complete after {args.timeout} s: outbox {outs}/{n}, "
                                 f".done {count_json(done)}/{n}, left in inbox {count_json(inbox)}, "
                                 f"in .inflight {count_entries(os.path.join(inbox, '.inflight'))}")
            time.sleep(args.poll)
        sampler.finish()
        end = proc_status(proc.pid)
        cpu1 = proc_cpu_seconds(proc.pid)

        outs = count_json(outbox)
        if outs != n:
            raise BenchError(f"outbox holds {outs} files, expected {n} (duplicates?)")
        with open(os.path.join(outbox, payloads[-1][0] + ".json")) as f:
            sample = json.load(f)
        expected = {"id": payloads[-1][0], "source_file": payloads[-1][0] + ".json", "line_count": 2}
        for k, v in expected.items():
            if sample.get(k) != v:
                raise BenchError(f"unexpected output {sample!r}: {k} should be {v!r}")
        if "note" in sample:
            raise BenchError(f"transform did not drop `note`: {sample!r}")

        drain = t_end - t_first
        result.update({
            "write_s": None if args.prefill else round(t_written - t_first, 3),
            "drain_s": round(drain, 3),
            "outbox_complete_s": round(t_outbox - t_first, 3),
            "after_last_write_s": None if args.prefill else round(t_end - t_written, 3),
            "files_per_s": round(n / drain, 1),
            "end_vmhwm_kib": end["VmHWM"],
            "end_vmrss_kib": end["VmRSS"],
            "drain_max_vmrss_kib": sampler.max_rss,
            "rss_samples": sampler.samples,
            "cpu_s": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None,
        })
        code, took, killed = stop(proc)
        result.update({"exit_code": code, "stop_s": round(took, 3), "killed": killed})
        proc = None
        return result
    except BenchError as e:
        raise BenchError(f"{e}\n--- tail of {log_path} ---\n{log_tail(log_path)}") from None
    finally:
        if proc is not None:
            stop(proc)
        log.close()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


COMPARE_FILES = [("flows/order-intake.yaml", "flows/order-intake.yaml"),
                 ("schemas/order.v1.json", "schemas/order.v1.json"),
                 ("schemas/priced-order.v1.json", "schemas/priced-order.v1.json"),
                 ("scripts/price.rhai", "scripts/price.rhai")]
DEFAULT_FLOOR = os.path.join(REPO, "target", "release", "examples", "drain_floor")


def compare_prepare(n, args_dir=None):
    """A fresh working folder with the sample flow and N order files in inbox/orders."""
    work = tempfile.mkdtemp(prefix="sluice-compare-", dir=args_dir)
    for src, dst in COMPARE_FILES:
        os.makedirs(os.path.dirname(os.path.join(work, dst)), exist_ok=True)
        shutil.copyfile(os.path.join(REPO, src), os.path.join(work, dst))
    inbox = os.path.join(work, "inbox", "orders")
    os.makedirs(inbox)
    for i in range(1, n + 1):
        name, data = order(i)
        with open(os.path.join(inbox, name + ".json"), "wb") as f:
            f.write(data)
    return work


def first_inbox_entry(inbox):
    """True while any order file is left in the inbox (stops at the first one)."""
    with os.scandir(inbox) as it:
        return any(not e.name.startswith(".") and e.name.endswith(".json") for e in it)


def compare_times(work):
    """(first output's mtime, last archived file's ctime, outputs, archived), in ns.
    A rename sets the ctime of the file it moves, so the ctime in .done/ is the archive time."""
    first, outputs = None, 0
    for sink in ("express", "standard"):
        with os.scandir(os.path.join(work, "outbox", sink)) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                outputs += 1
                m = e.stat().st_mtime_ns
                first = m if first is None else min(first, m)
    last, archived = None, 0
    with os.scandir(os.path.join(work, "inbox", "orders", ".done")) as it:
        for e in it:
            archived += 1
            c = e.stat().st_ctime_ns
            last = c if last is None else max(last, c)
    return first, last, outputs, archived


def proc_cpu_split(pid):
    """(user, system) seconds of pid from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def compare_one(label, cmd, work, n, args):
    """Runs one program on a prefilled folder until every file is archived."""
    log_path = os.path.join(work, "run.log")
    inbox = os.path.join(work, "inbox", "orders")
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            if label == "floor":
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                wall = time.monotonic() - t0
                if proc.returncode != 0:
                    raise BenchError(f"the floor exited with {proc.returncode}\n{log_tail(log_path)}")
                user, system, hwm = usage.ru_utime, usage.ru_stime, usage.ru_maxrss
            else:
                deadline = t0 + args.timeout
                inflight = os.path.join(inbox, ".inflight")
                while first_inbox_entry(inbox) or count_entries(inflight) > 0:
                    if proc.poll() is not None:
                        raise BenchError(f"{label} exited with {proc.returncode}\n{log_tail(log_path)}")
                    if time.monotonic() > deadline:
                        raise BenchError(f"{label}: drain not complete after {args.timeout} s\n{log_tail(log_path)}")
                    time.sleep(0.2)
                wall = time.monotonic() - t0
                user, system = proc_cpu_split(proc.pid)
                hwm = proc_status(proc.pid)["VmHWM"]
                code, _, killed = stop(proc)
                if code != 0 or killed:
                    raise BenchError(f"{label}: exit {code} after SIGTERM (killed: {killed})\n{log_tail(log_path)}")
        finally:
            if proc.poll() is None:
                stop(proc)
    bad = sum(count_entries(os.path.join(inbox, d)) for d in (".error", ".rejected", ".partial"))
    first, last, outputs, archived = compare_times(work)
    if bad or outputs != n or archived != n:
        raise BenchError(f"{label}: {outputs} outputs and {archived} archived of {n}, {bad} failed\n{log_tail(log_path)}")
    drain = (last - first) / 1e9
    return {"label": label, "files": n, "drain_s": round(drain, 3), "files_per_s": round(n / drain, 1),
            "wall_s": round(wall, 3), "user_s": round(user, 3), "system_s": round(system, 3),
            "system_us_per_file": round(system / n * 1e6, 1), "peak_rss_kib": hwm}


def compare(args):
    labels = dict(b.split("=", 1) if "=" in b else ("sluice", b) for b in (args.bin_list or [f"sluice={DEFAULT_BIN}"]))
    labels = {label: os.path.abspath(path) for label, path in labels.items()}
    args.floor = os.path.abspath(args.floor)
    for path in [args.floor, *labels.values()]:
        if not os.access(path, os.X_OK):
            raise BenchError(f"{path} is not an executable (bench/README.md says how to build it)")
    runs = []
    for r in range(1, args.rounds + 1):
        programs = [("floor", [args.floor, "--root", ".", "--threads", "2"])]
        programs += [(label, [path, "run"]) for label, path in labels.items()]
        for label, cmd in programs:
            work = compare_prepare(args.files, args.dir)
            try:
                res = compare_one(label, cmd, work, args.files, args)
            finally:
                if args.keep:
                    print(f"kept {work}", file=sys.stderr)
                else:
                    shutil.rmtree(work, ignore_errors=True)
            res["round"] = r
            runs.append(res)
            print(compare_row(res, runs), file=sys.stderr)
    return runs


def compare_row(res, runs):
    floor = next(x for x in reversed(runs) if x["label"] == "floor" and x["round"] == res["round"])
    ratio = res["files_per_s"] / floor["files_per_s"]
    sys_ratio = res["system_s"] / floor["system_s"] if floor["system_s"] else float("nan")
    return (f"round {res['round']} {res['label']:>8}: {res['files']} files, drain {res['drain_s']:.3f} s "
            f"({res['files_per_s']:.0f}/s, {ratio:.2f}x floor), wall {res['wall_s']:.2f} s, "
            f"user {res['user_s']:.2f} s, sys {res['system_s']:.2f} s ({res['system_us_per_file']:.0f} us/file, "
            f"{sys_ratio:.1f}x floor), peak RSS {mib(res['peak_rss_kib'])}")


def mib(kib):
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def table(r):
    rows = [
        ("files", f"{r['files']} (avg {r['bytes_per_file_avg']} B)"),
        ("startup to `flow ready`", f"{r['startup_s']:.3f} s"),
    ] + ([
        ("writing the files took", f"{r['prefill_write_s']:.3f} s (before the start)"),
        ("drain (spawn -> all done)", f"{r['drain_s']:.3f} s"),
    ] if r["mode"] == "prefill" else [
        ("writing the files took", f"{r['write_s']:.3f} s"),
        ("drain (first file -> all done)", f"{r['drain_s']:.3f} s"),
        ("  of which after the last write", f"{r['after_last_write_s']:.3f} s"),
    ]) + [
        ("  outbox complete at", f"{r['outbox_complete_s']:.3f} s"),
        ("throughput", f"{r['files_per_s']:.0f} files/s"),
        ("sluice CPU during drain", "n/a" if r["cpu_s"] is None else f"{r['cpu_s']:.2f} s"),
        ("idle VmRSS / VmHWM", f"{mib(r['idle_vmrss_kib'])} / {mib(r['idle_vmhwm_kib'])}"),
        ("max VmRSS during drain", f"{mib(r['drain_max_vmrss_kib'])} ({r['rss_samples']} samples)"),
        ("VmHWM at end of drain", mib(r["end_vmhwm_kib"])),
        ("stop (SIGTERM)", f"exit {r['exit_code']} in {r['stop_s']:.3f} s" + (" (SIGKILLed)" if r["killed"] else "")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main():
    p = argparse.ArgumentParser(description="Benchmark how fast `sluice run` drains a folder of JSON files.")
    p.add_argument("--files", type=int, default=10_000, help="number of files (default 10000)")
    p.add_argument("--bin", default=DEFAULT_BIN, help=f"sluice binary (default {DEFAULT_BIN})")
    p.add_argument("--timeout", type=float, default=300, help="max seconds for the drain (default 300)")
    p.add_argument("--startup-timeout", type=float, default=30, help="max seconds until `flow ready` (default 30)")
    p.add_argument("--idle", type=float, default=1.0, help="seconds to wait after `flow ready` before the idle sample")
    p.add_argument("--poll", type=float, default=0.05, help="completion poll interval in seconds (default 0.05)")
    p.add_argument("--prefill", action="store_true",
                   help="write all files into the inbox before starting sluice; the clock starts at spawn "
                        "(no idle sample). Default: write them while it runs, the clock starts at the first file")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout (table goes to stderr)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--compare", action="store_true",
                   help="side by side: the sample flow flows/order-intake.yaml on N prefilled files, "
                        "the floor (--floor) and each --bin, one after the other, --rounds times")
    p.add_argument("--floor", default=DEFAULT_FLOOR, help=f"--compare: the floor program (default {DEFAULT_FLOOR})")
    p.add_argument("--rounds", type=int, default=3, help="--compare: rounds (default 3)")
    p.add_argument("--dir", default=None,
                   help="--compare: where the working folders are made (default: the system temp dir); "
                        "e.g. /dev/shm for a tmpfs")
    p.add_argument("--bin-as", dest="bin_list", action="append", metavar="LABEL=PATH",
                   help="--compare: a sluice binary and its label; repeat to compare builds (default sluice=--bin)")
    args = p.parse_args()
    if args.files < 1:
        p.error("--files must be at least 1")
    if args.compare:
        if not args.bin_list:
            args.bin_list = [f"sluice={args.bin}"]
        try:
            runs = compare(args)
        except BenchError as e:
            print(f"file_drain: FAILED: {e}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(runs, indent=2))
        return 0
    try:
        r = bench(args)
    except BenchError as e:
        print(f"file_drain: FAILED: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(table(r), file=sys.stderr)
        print(json.dumps(r, indent=2))
    else:
        print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
