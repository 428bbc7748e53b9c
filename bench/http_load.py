#!/usr/bin/env python3
"""http_load.py - the order-intake flow over HTTP under wrk, against a plain axum floor.

Runs, one after the other and alternating (sluice, floor, sluice, floor, ... for --rounds):

* sluice: `target/release/sluice run --listen 127.0.0.1:PORT --admin off` in a fresh temp dir
  holding `flows/order-intake-http.yaml` (order-intake with an `http` trigger on POST /orders
  and two file sinks with a fixed name and `on_conflict: overwrite`), `schemas/` and `scripts/`
  copied from the repository;
* floor: `target/release/examples/http_floor --listen 127.0.0.1:PORT --root TEMPDIR`, the same
  library calls in one axum handler (crates/sluice/examples/http_floor.rs);
* with `--node-red DIR` (and `--sinks none`), Node-RED 5 running the same work as one flow
  (bench/node_red.py says what it does; bench/node_red_setup.sh DIR installs it).

Each run starts a fresh process, checks one request by hand (200, the priced order), warms up
with wrk for --warmup seconds, then runs `wrk -t THREADS -c CONNECTIONS -d DURATION --latency`
with a Lua script that POSTs two ~250-byte orders in turn (one goes express, one standard)
and counts the status of every answer. After the run it reads VmHWM from /proc/<pid>/status
and the server's CPU time, then stops it with SIGTERM.

Needs: wrk on PATH, Python 3 (standard library only), Linux (/proc), both release binaries
(bench/http_load.sh builds them). Exit 1 if a server does not come up, a check fails or wrk
fails; non-200 answers are reported, not fatal.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import node_red

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# ~250 bytes each as sent (compact JSON). `note` is dropped by the transform.
ORDERS = [
    {
        "id": "o-10017", "currency": "EUR",
        "customer": {"id": "c-981", "country": "DE", "tier": "silver"},
        "lines": [
            {"sku": "A1-RED", "qty": 2, "price": 9.5},
            {"sku": "B7-XL", "qty": 1, "price": 120.0},
            {"sku": "C3", "qty": 5, "price": 3.25},
        ],
        "note": "leave at the back door",
    },
    {
        "id": "o-10018", "currency": "EUR",
        "customer": {"id": "c-982", "country": "NL", "tier": "gold"},
        "lines": [
            {"sku": "A1-BLUE", "qty": 3, "price": 9.5},
            {"sku": "B7-XS", "qty": 1, "price": 110.0},
            {"sku": "C4", "qty": 4, "price": 3.75},
        ],
        "note": "ring twice, then wait",
    },
]
# What the flow makes of them (received_at aside).
EXPECTED = [
    {"order_id": "o-10017", "priority": "normal", "total": 155.25},
    {"order_id": "o-10018", "priority": "high", "total": 153.5},
]

LUA = r"""
-- POSTs the orders in bodies.lua in turn and counts the status of every answer.
local bodies = dofile("%(bodies)s")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  requests_ = {}
  for i, body in ipairs(bodies) do
    requests_[i] = wrk.format("POST", "/orders", { ["Content-Type"] = "application/json" }, body)
  end
  n_ = 0
  statuses = {}
end

function request()
  n_ = n_ + 1
  return requests_[(n_ %% #requests_) + 1]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("STATUS %%d %%d\n", status, count))
  end
end
"""


def fail(message, log=None):
    print(f"http_load: {message}", file=sys.stderr)
    if log and os.path.exists(log):
        with open(log, errors="replace") as f:
            tail = f.readlines()[-20:]
        print("--- tail of " + log, file=sys.stderr)
        sys.stderr.writelines(tail)
    sys.exit(1)


def section(text, start, end):
    """The lines of `text` from the top-level key `start:` up to (not including) `end:`."""
    lines = text.splitlines(keepends=True)
    out, inside = [], False
    for line in lines:
        if re.match(rf"^{start}:", line):
            inside = True
        elif inside and re.match(rf"^{end}:", line):
            break
        if inside:
            out.append(line)
    if not out:
        fail(f"flows/order-intake.yaml has no `{start}:` section")
    return "".join(out).rstrip() + "\n"


def make_dir(concurrency=None, sinks="file"):
    """The temp dir with the HTTP flow, schemas, script and the wrk Lua script."""
    root = tempfile.mkdtemp(prefix="sluice-http-load-")
    with open(os.path.join(REPO, "flows", "order-intake.yaml")) as f:
        original = f.read()
    # contract + steps verbatim from the repository's flow, so the two cannot drift apart.
    contract_and_steps = section(original, "contract", "sinks")
    errors = section(original, "errors", "tests")
    sinks_yaml = (
        "\nsinks:\n"
        "  express:\n"
        "    file: { path: outbox/express, name: last.json, on_conflict: overwrite }\n"
        "  standard:\n"
        "    file: { path: outbox/standard, name: last.json, on_conflict: overwrite }\n\n"
    )
    if sinks == "none":
        # Diagnostic only: no route and no sinks, so the message finishes without a delivery
        # (and the output contract, which is checked before sink writes, is not checked).
        cut = contract_and_steps.index("  - route:")
        contract_and_steps = contract_and_steps[:cut].rstrip() + "\n"
        sinks_yaml = "\n"
    flow = (
        "# Written by bench/http_load.py: flows/order-intake.yaml with an http trigger and\n"
        "# cheap sinks (one fixed file name per sink, overwritten by every request).\n"
        "name: order-intake-http\n"
        "description: order-intake over HTTP request-reply, for the load benchmark.\n"
        + (f"concurrency: {concurrency}\n" if concurrency else "")
        + "\ntrigger:\n"
        "  http: { path: /orders, method: POST }\n\n"
        + contract_and_steps
        + sinks_yaml
        + errors
    )
    os.makedirs(os.path.join(root, "flows"))
    with open(os.path.join(root, "flows", "order-intake-http.yaml"), "w") as f:
        f.write(flow)
    shutil.copytree(os.path.join(REPO, "schemas"), os.path.join(root, "schemas"))
    os.makedirs(os.path.join(root, "scripts"))
    shutil.copy(os.path.join(REPO, "scripts", "price.rhai"), os.path.join(root, "scripts"))
    bodies = [json.dumps(o, separators=(",", ":")) for o in ORDERS]
    with open(os.path.join(root, "bodies.lua"), "w") as f:
        f.write("return {\n" + "".join(f"  [[{b}]],\n" for b in bodies) + "}\n")
    with open(os.path.join(root, "post.lua"), "w") as f:
        f.write(LUA % {"bodies": os.path.join(root, "bodies.lua")})
    return root, [len(b) for b in bodies]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, order, timeout=5):
    data = json.dumps(order, separators=(",", ":")).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/orders", data=data, method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_up(proc, port, log, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"the server exited with {proc.returncode} before answering", log)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    fail(f"nothing listening on port {port} after {timeout} s", log)


def wait_route(proc, port, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"the server exited with {proc.returncode} before its route answered", log)
        try:
            if post(port, ORDERS[0], timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    fail(f"POST /orders did not answer 200 within {timeout} s", log)


def check_answers(port, log):
    """One request per order by hand: 200 and the expected priced order."""
    for order, expected in zip(ORDERS, EXPECTED):
        status, body = post(port, order)
        if status != 200:
            fail(f"check request for {order['id']}: status {status}, body {body[:300]!r}", log)
        doc = json.loads(body)
        for key, value in expected.items():
            if doc.get(key) != value:
                fail(f"check request for {order['id']}: {key} = {doc.get(key)!r}, expected {value!r}", log)
        if "received_at" not in doc or len(doc.get("lines", [])) != 3:
            fail(f"check request for {order['id']}: unexpected body {doc}", log)


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                out[key] = int(value.split()[0])  # kB for Vm*, a count for Threads
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"cannot read the latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([0-9.]+\w+)", out)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m:
        r["avg_ms"], r["stdev_ms"], r["max_ms"] = (to_ms(x) for x in m.groups())
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = to_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non_2xx_3xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    r["statuses"] = {int(s): int(n) for s, n in re.findall(r"^STATUS (\d+) (\d+)$", out, re.M)}
    return r


def run_wrk(args, port, lua, duration):
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration}s",
           "--latency", "--timeout", "5s", "-s", lua, f"http://127.0.0.1:{port}/orders"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        fail(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return cmd, done.stdout


def log_findings(log):
    """Lines of the sluice log at WARN or ERROR level (text format)."""
    found = []
    if not os.path.exists(log):
        return found
    with open(log, errors="replace") as f:
        for line in f:
            if re.search(r"\b(WARN|ERROR)\b", line):
                found.append(line.rstrip())
    return found


def one_run(args, which, root, run_no):
    port = free_port()
    log = os.path.join(root, f"{which}-{run_no}.log")
    if which == "sluice":
        admin = f"127.0.0.1:{free_port()}" if args.admin else "off"
        cmd = [args.bin, "run", "--listen", f"127.0.0.1:{port}", "--admin", admin]
    elif which == "node-red":
        cmd = node_red.command(args.node_red, node_red.prepare(root), port)
    else:
        cmd = [args.floor_bin, "--listen", f"127.0.0.1:{port}", "--root", root]
        if args.sinks == "file":
            # The floor writes what sluice's two file sinks write (one file per order).
            cmd += ["--outbox", os.path.join(root, "floor-outbox")]
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=logf)
    try:
        started = time.monotonic()
        wait_up(proc, port, log, timeout=60 if which == "node-red" else 20)
        if which == "node-red":
            # It listens before its flow is started: wait until the route answers.
            wait_route(proc, port, log)
        up_ms = (time.monotonic() - started) * 1e3
        check_answers(port, log)
        idle = proc_status(proc.pid)
        if args.warmup > 0:
            run_wrk(args, port, os.path.join(root, "post.lua"), args.warmup)
        load_before = open("/proc/loadavg").read().split()[0]
        cpu0 = cpu_seconds(proc.pid)
        wrk_cmd, out = run_wrk(args, port, os.path.join(root, "post.lua"), args.duration)
        cpu = cpu_seconds(proc.pid) - cpu0
        after = proc_status(proc.pid)
        load_after = open("/proc/loadavg").read().split()[0]
        if args.verbose:
            print(out, file=sys.stderr)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    r = parse_wrk(out)
    if r["rps"] is None or r["p99_ms"] is None:
        fail(f"cannot read wrk's output:\n{out}")
    r.update(
        which=which, run=run_no, port=port, up_ms=up_ms, exit=proc.returncode,
        idle_rss_kib=idle.get("VmRSS"), vmhwm_kib=after.get("VmHWM"),
        rss_end_kib=after.get("VmRSS"), threads=after.get("Threads"), cpu_s=cpu,
        cpu_ms_per_req=(cpu * 1e3 / r["requests"]) if r["requests"] else None,
        wrk_cmd=" ".join(wrk_cmd).replace(root, "$TMP"), log=log,
        loadavg=f"{load_before} -> {load_after}",
        all_200=(set(r["statuses"]) == {200} and not r["non_2xx_3xx"]),
    )
    if which == "sluice":
        r["log_findings"] = log_findings(log)
        leftovers = []
        for sink in ("express", "standard") if args.sinks == "file" else ():
            folder = os.path.join(root, "outbox", sink)
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            if names != ["last.json"]:
                leftovers.append(f"outbox/{sink}: {names[:10]}{' …' if len(names) > 10 else ''}")
        r["outbox_problems"] = leftovers
        dead = os.path.join(root, "dead-letter")
        r["dead_letters"] = sum(len(files) for _, _, files in os.walk(dead)) if os.path.isdir(dead) else 0
    return r


def mib(kib):
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=15, help="seconds of measured load per run (15)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first (2)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--rounds", type=int, default=2, help="sluice+floor pairs, alternating (2)")
    p.add_argument("--bin", default=os.path.join(REPO, "target", "release", "sluice"))
    p.add_argument("--floor-bin", default=os.path.join(REPO, "target", "release", "examples", "http_floor"))
    p.add_argument("--concurrency", type=int, default=None,
                   help="add `concurrency: N` to sluice's flow (default: none, i.e. the number of cores)")
    p.add_argument("--sinks", choices=("file", "none"), default="file",
                   help="diagnostic: `none` drops sluice's route step and sinks (default: file)")
    p.add_argument("--json", action="store_true", help="numbers as JSON on stdout")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--admin", action="store_true",
                   help="run sluice with its admin server and metrics on, as deployed (default: off)")
    p.add_argument("--verbose", action="store_true", help="print wrk's output")
    p.add_argument("--node-red", metavar="DIR", default=None,
                   help="also run Node-RED installed in DIR (bench/node_red_setup.sh DIR) in every round; "
                        "needs --sinks none")
    args = p.parse_args()
    if args.node_red and args.sinks != "none":
        fail("--node-red compares the request-reply work only: add --sinks none")
    if args.node_red:
        args.node_red = os.path.abspath(args.node_red)
    for path in (args.bin, args.floor_bin):
        if not os.access(path, os.X_OK):
            fail(f"{path} is missing: run bench/http_load.sh (or cargo build --release -p sluice --bin sluice --example http_floor)")
    if not shutil.which("wrk"):
        fail("wrk is not on PATH (Debian: apt-get install -y wrk)")

    root, sizes = make_dir(args.concurrency, args.sinks)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    say(f"temp dir {root}; sluice flow concurrency {args.concurrency or 'default (cores)'}, sinks {args.sinks}; bodies {sizes} bytes; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s --latency (after {args.warmup} s warm-up); {args.rounds} rounds")
    runs = []
    try:
        for n in range(1, args.rounds + 1):
            for which in ("sluice", "floor") + (("node-red",) if args.node_red else ()):
                r = one_run(args, which, root, n)
                runs.append(r)
                say(f"  {which} run {n}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
                    f"p99 {r['p99_ms']:.2f} ms, VmHWM {mib(r['vmhwm_kib'])}, statuses {r['statuses']}")
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    sl = [r for r in runs if r["which"] == "sluice"]
    fl = [r for r in runs if r["which"] == "floor"]
    nr = [r for r in runs if r["which"] == "node-red"]
    ratios = [s["rps"] / f["rps"] for s, f in zip(sl, fl)]
    med = statistics.median
    summary = {
        "sluice_rps_median": med(r["rps"] for r in sl),
        "floor_rps_median": med(r["rps"] for r in fl),
        "ratio_per_round": ratios,
        "ratio_of_medians": med(r["rps"] for r in sl) / med(r["rps"] for r in fl),
        "sluice_p99_ms_max": max(r["p99_ms"] for r in sl),
        "sluice_vmhwm_mib_max": max(r["vmhwm_kib"] for r in sl) / 1024,
    }
    if nr:
        summary["node_red_rps_median"] = med(r["rps"] for r in nr)
        summary["node_red_vmhwm_mib_max"] = max(r["vmhwm_kib"] for r in nr) / 1024
        summary["ratio_to_node_red_per_round"] = [s["rps"] / n["rps"] for s, n in zip(sl, nr)]
        summary["ratio_to_node_red_of_medians"] = summary["sluice_rps_median"] / summary["node_red_rps_median"]
    summary["goals"] = {
        # Issue 11's goals: at least the floor without sinks, 0.8x it with two file sinks.
        f"rps_ratio_at_least_{1.0 if args.sinks == 'none' else 0.8}":
            summary["ratio_of_medians"] >= (1.0 if args.sinks == "none" else 0.8),
        "p99_at_most_5ms": summary["sluice_p99_ms_max"] <= 5.0,
        "peak_rss_at_most_50MiB": summary["sluice_vmhwm_mib_max"] <= 50.0,
    }
    if nr:
        summary["goals"]["node_red_ratio_at_least_10"] = summary["ratio_to_node_red_of_medians"] >= 10.0
    summary["all_answers_200"] = all(r["all_200"] for r in runs)

    say("")
    say("| run | server | req/s | p50 | p99 | max | requests | statuses | VmHWM | CPU ms/req | load avg |")
    say("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        statuses = ", ".join(f"{s}: {c}" for s, c in sorted(r["statuses"].items()))
        say(f"| {r['run']} | {r['which']} | {r['rps']:.0f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms "
            f"| {r['max_ms']:.1f} ms | {r['requests']} | {statuses} | {mib(r['vmhwm_kib'])} "
            f"| {r['cpu_ms_per_req']:.3f} | {r['loadavg']} |")
    say("")
    say("sluice/floor req/s per round: " + ", ".join(f"{x:.2f}" for x in ratios)
        + f"; of the medians: {summary['ratio_of_medians']:.2f}")
    for r in runs:
        extra = []
        if r["non_2xx_3xx"]:
            extra.append(f"non-2xx/3xx {r['non_2xx_3xx']}")
        if any(r["socket_errors"].values()):
            extra.append(f"socket errors {r['socket_errors']}")
        if r.get("log_findings"):
            extra.append(f"{len(r['log_findings'])} WARN/ERROR log lines, first: {r['log_findings'][0]}")
        if r.get("outbox_problems"):
            extra.append("outbox: " + "; ".join(r["outbox_problems"]))
        if r.get("dead_letters"):
            extra.append(f"{r['dead_letters']} dead letters")
        if r["exit"] not in (0, None):
            extra.append(f"exit {r['exit']} on SIGTERM")
        if extra:
            say(f"{r['which']} run {r['run']}: " + "; ".join(extra))
    if nr:
        say("sluice/Node-RED req/s per round: " + ", ".join(f"{x:.1f}" for x in summary["ratio_to_node_red_per_round"])
            + f"; of the medians: {summary['ratio_to_node_red_of_medians']:.1f}")
    say("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in summary["goals"].items()))
    say(f"all answers 200: {summary['all_answers_200']}")
    if args.json:
        for r in runs:
            r.pop("log", None)
        print(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
