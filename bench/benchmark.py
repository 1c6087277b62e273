#!/usr/bin/env python3
"""Benchmark web-fe against redis-benchmark on this machine, and print the figures.

Starts a private redis-server and the release web-fe on free loopback ports, then:
  * time from process start to the first 200 from /healthz (ready to serve)
  * idle RSS of web-fe
  * redis-benchmark -t incr -c 50 (the ceiling: Redis alone, no HTTP)
  * nginx-light answering a fixed 200, with keep-alive off and on (the HTTP ceiling),
    writing an access log line per request to /dev/null as web-fe writes its request line
    (nginx logs by default); the same without its log is printed beside
  * wrk at 50 connections on /api, / and /healthz (no Redis call), with keep-alive on and
    off, as ratios of those ceilings; without keep-alive, nginx, / and /healthz take turns
    (A B C C B A, half a run each), so that the machine's drift tilts none of their ratios
  * for each wrk run, the whole machine's CPU time per request (/proc/stat) and how much
    of the run its cores were busy, and Redis's own time per counted view and views per
    script call (INFO commandstats): where a counted view's cost goes, how long requests
    waited with a core idle, and how many views each batch carried
  * loaded (peak) RSS of web-fe
  * the replicated set-up of the stack: a master with one replica attached, each batch of
    views answered once the replica confirms it (WAIT): /api with keep-alive and / without
All of the above is one round; --rounds (3) rounds run, each ratio is taken within a round,
and the medians are printed against the targets: / without keep-alive at least 0.85x nginx
and 0.85x /healthz without keep-alive; /api with keep-alive at least 0.7x INCR, and 0.5x
INCR replicated; p99 under 10 ms on every route. Then, once:
  * / with 10,000 replicas in Redis: the page must not grow with them
  * the cost of Redis persistence: /api with keep-alive against Redis without persistence,
    with the append-only file written before each answer and left to the kernel to sync
    (the compose and stack setting), synced every second, and synced on every write
    (survives a machine crash too)
Every run is bounded (--seconds per wrk run) and both servers are stopped by PID.
And the instructions web-fe's own code runs per request under callgrind, for / and /healthz
without keep-alive and /api and /healthz with it: counts that do not swing with the
machine's load the way req/s does.
Needs: cargo, redis-server, redis-benchmark, wrk, nginx, valgrind
(Debian: redis-server redis-tools wrk nginx-light valgrind).
"""

import argparse
import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "web-fe")
CONNECTIONS = 50


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        sys.exit(f"benchmark: missing {', '.join(missing)}; on Debian/Ubuntu: "
                 "sudo apt-get install redis-server redis-tools wrk nginx-light valgrind")


def http_status(port, path):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return int(s.recv(12)[9:12])
    except (OSError, ValueError):
        return None


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def start_redis(port, extra, data_dir):
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", data_dir] + extra,
        stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("benchmark: redis-server did not start")


def start_web(port, redis_port, keep_alive, wrapper=(), patience=10):
    """web-fe on `port`, run under `wrapper` (a command and its arguments) if one is given."""
    env = {"PORT": str(port), "HEALTH_PORT": str(free_port()), "HOST": "127.0.0.1",
           "KEEP_ALIVE": keep_alive,
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "PATH": os.environ.get("PATH", "")}
    started = time.perf_counter()
    proc = subprocess.Popen([*wrapper, BINARY], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL if wrapper else None)
    while http_status(port, "/healthz") != 200:
        if proc.poll() is not None or time.perf_counter() - started > patience:
            sys.exit("benchmark: web-fe did not start")
        time.sleep(0.001)
    return proc, (time.perf_counter() - started) * 1000


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


NGINX_CONF = """
worker_processes auto;
daemon off;
pid {dir}/nginx.pid;
error_log stderr error;
events {{ worker_connections 1024; }}
http {{
    access_log {access_log};
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout {keep_alive};
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 "ok\n"; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_server(data_dir, keep_alive, logged):
    """nginx answering a fixed 200 on a free port: what HTTP alone costs on this machine.
    `logged`: a line per request to /dev/null, as nginx logs by default and as web-fe does
    in this benchmark. Yields its port and PID."""
    port = free_port()
    conf = os.path.join(data_dir, f"nginx-{keep_alive}-{logged}.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=data_dir, port=port,
                                  keep_alive="65s" if keep_alive == "on" else "0",
                                  access_log="/dev/null" if logged else "off"))
    proc = subprocess.Popen(["nginx", "-p", data_dir, "-c", conf])
    try:
        deadline = time.monotonic() + 10
        while http_status(port, "/") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("benchmark: nginx did not start")
            time.sleep(0.01)
        yield port, proc.pid
    finally:
        stop(proc)


def nginx_ceiling(seconds, data_dir, keep_alive, logged):
    """One wrk run on nginx alone."""
    with nginx_server(data_dir, keep_alive, logged) as (port, pid):
        return wrk(port, "/", seconds, close=(keep_alive == "off"), servers=[("nginx", pid)])


def redis_benchmark(port, requests):
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "incr",
         "-c", str(CONNECTIONS), "-n", str(requests), "--csv"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    row = [line for line in out.splitlines() if line.startswith('"INCR"')][0]
    fields = [f.strip('"') for f in row.split(",")]
    return float(fields[1]), float(fields[6])  # rps, p99 ms


def cpu_busy_seconds():
    """CPU time spent on this machine so far, all cores, all processes (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_seconds(pid):
    """CPU seconds (user, kernel) a process and its children alive now (nginx's workers) have
    run so far, all threads included."""
    pids = [pid] + [int(c) for t in os.listdir(f"/proc/{pid}/task")
                    for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
    user = kernel = 0
    for p in pids:
        fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        user, kernel = user + int(fields[11]), kernel + int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, kernel / tick


def wrk(port, path, seconds, close, servers=()):
    """`servers`: (name, pid) of the processes whose CPU per request is reported apart."""
    cmd = ["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--latency",
           "--timeout", "5s"]
    if close:
        cmd += ["-H", "Connection: close"]
    names = ["wrk", *(name for name, _ in servers)]

    def each_seconds():
        # wrk is this script's only child that ends during the run.
        done = os.times()
        return [(done.children_user, done.children_system),
                *(process_seconds(pid) for _, pid in servers)]

    busy, before, started = cpu_busy_seconds(), each_seconds(), time.monotonic()
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    busy, after = cpu_busy_seconds() - busy, each_seconds()
    elapsed = time.monotonic() - started
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "requests": requests,
            # The whole machine's CPU per request: load tool, server and Redis together.
            "cpu_us": busy * 1e6 / requests,
            # How much of the run the cores were busy: below 1, requests waited with a core idle.
            "busy_s": busy, "core_s": elapsed * os.cpu_count(),
            # The same, split: wrk's own (user, kernel), then each server's.
            "split_us": {name: tuple((a - b) * 1e6 / requests for a, b in zip(end, start))
                         for name, start, end in zip(names, before, after)},
            "non2xx": int(errors.group(1)) if errors else 0}


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=10, check=True).stdout


def script_cost(port, requests):
    """Redis's own time per counted view, and views per script call, since the last CONFIG
    RESETSTAT (INFO commandstats): a call counts a batch of views."""
    stats = redis_cli(port, "INFO", "commandstats")
    found = re.search(r"cmdstat_evalsha:calls=(\d+),usec=(\d+),", stats)
    if not found or not requests:
        return None, None
    calls, usec = int(found.group(1)), int(found.group(2))
    return usec / requests, requests / calls


def mirrored(runs, seconds):
    """Runs each of `runs` ((name, run taking seconds) pairs) twice, for half of `seconds`
    each, in the order A B C C B A, and joins each one's halves: a machine that speeds up or
    slows down during a round (this shared one does, by a fifth within minutes) tilts no
    ratio between them."""
    halves = {}
    for name, run in runs + runs[::-1]:
        halves.setdefault(name, []).append(run(max(1, seconds // 2)))
    return {name: joined(parts) for name, parts in halves.items()}


def joined(parts):
    """One run's figures from its parts: rates and costs over all their requests; the worst
    p99 (percentiles of parts do not add up to one)."""
    requests = sum(p["requests"] for p in parts)

    def per_request(pick):
        values = [pick(p) for p in parts]
        if None in values:
            return None
        return sum(v * p["requests"] for v, p in zip(values, parts)) / requests
    calls = [p["requests"] / p["batch"] for p in parts if p.get("batch")]
    return {"rps": requests / sum(p["requests"] / p["rps"] for p in parts),
            "p99_ms": max(p["p99_ms"] for p in parts), "requests": requests,
            "cpu_us": per_request(lambda p: p["cpu_us"]),
            "busy_s": sum(p["busy_s"] for p in parts), "core_s": sum(p["core_s"] for p in parts),
            "split_us": {name: tuple(per_request(lambda p, n=name, i=i: p["split_us"][n][i])
                                     for i in (0, 1))
                         for name in parts[0]["split_us"]},
            "non2xx": sum(p["non2xx"] for p in parts),
            "redis_us": per_request(lambda p: p.get("redis_us")),
            "batch": requests / sum(calls) if len(calls) == len(parts) else None}


def measure(port, path, seconds, keep_alive, redis_port, servers=()):
    """One wrk run on web-fe, with Redis's share of it."""
    redis_cli(redis_port, "CONFIG", "RESETSTAT")
    r = wrk(port, path, seconds, close=(keep_alive == "off"), servers=servers)
    # /healthz counts nothing; the heartbeat's script is not a view's cost.
    r["redis_us"], r["batch"] = (None, None) if path == "/healthz" \
        else script_cost(redis_port, r["requests"])
    return r


def one_round(args, data_dir):
    """Ceilings and web-fe, measured minutes apart on the same machine: every ratio in a
    target comes from one round."""
    redis_port = free_port()
    redis = start_redis(redis_port, args.redis_args.split(), data_dir)
    runs, memory = {}, {}
    try:
        incr = redis_benchmark(redis_port, args.redis_requests)
        for keep_alive in ("on", "off"):
            port = free_port()
            web, ready_ms = start_web(port, redis_port, keep_alive)
            try:
                time.sleep(0.5)
                idle = rss_kib(web.pid)
                servers = [("web-fe", web.pid), ("Redis", redis.pid)]

                def on_web(path, seconds):
                    return measure(port, path, seconds, keep_alive, redis_port, servers)
                if keep_alive == "on":
                    # /healthz answers without Redis: the HTTP part of a view's cost alone.
                    for path in ("/api", "/", "/healthz"):
                        runs[(path, keep_alive)] = on_web(path, args.seconds)
                else:
                    runs[("/api", "off")] = on_web("/api", args.seconds)
                    # The two targets without keep-alive compare / with nginx and with
                    # /healthz: the three take turns, nginx waiting beside web-fe.
                    with nginx_server(data_dir, "off", True) as (nginx_port, nginx_pid):
                        turns = mirrored([
                            ("nginx", lambda t: wrk(nginx_port, "/", t, close=True,
                                                    servers=[("nginx", nginx_pid)])),
                            ("/", lambda t: on_web("/", t)),
                            ("/healthz", lambda t: on_web("/healthz", t)),
                        ], args.seconds)
                    nginx_off = turns.pop("nginx")
                    runs.update({(path, "off"): r for path, r in turns.items()})
                loaded = rss_kib(web.pid, "VmHWM")
            finally:
                stop(web)
            memory[keep_alive] = {"ready_ms": ready_ms, "idle_kib": idle, "loaded_kib": loaded}
    finally:
        stop(redis)
    # The ceiling logs each request, as web-fe does; the same nginx without its log is
    # printed beside it.
    nginx = {"off": nginx_off, "on": nginx_ceiling(args.seconds, data_dir, "on", True)}
    quiet = {k: nginx_ceiling(args.seconds, data_dir, k, False) for k in ("off", "on")}
    replicated = replicated_runs(args.seconds, data_dir)
    return {"incr": incr, "nginx": nginx, "quiet_nginx": quiet, "runs": runs, "memory": memory,
            "replicated": replicated}


def ratios(one):
    """The figures the targets name, within one round."""
    incr, nginx, runs, rep = one["incr"][0], one["nginx"], one["runs"], one["replicated"]
    return {
        "/ off vs nginx off": runs[("/", "off")]["rps"] / nginx["off"]["rps"],
        "/ off vs /healthz off": runs[("/", "off")]["rps"] / runs[("/healthz", "off")]["rps"],
        "/api on vs INCR": runs[("/api", "on")]["rps"] / incr,
        "replicated /api on vs INCR": rep[("/api", "on")]["rps"] / incr,
    }


TARGETS = {
    "/ off vs nginx off": 0.85,
    "/ off vs /healthz off": 0.85,
    "/api on vs INCR": 0.7,
    "replicated /api on vs INCR": 0.5,
}
P99_LIMIT_MS = 10


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every comparison; medians are printed")
    parser.add_argument("--redis-requests", type=int, default=300_000)
    parser.add_argument("--redis-args", default="",
                        help="extra redis-server arguments, e.g. '--appendonly yes'")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    need("redis-server", "redis-cli", "redis-benchmark", "wrk", "nginx", "valgrind")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "web-fe"], cwd=ROOT, check=True)

    data_dir = tempfile.mkdtemp(prefix="web-fe-bench-")
    rounds = []
    for n in range(args.rounds):
        print(f"benchmark: round {n + 1} of {args.rounds}", file=sys.stderr)
        rounds.append(one_round(args, data_dir))
    persistence = persistence_runs(args.seconds, data_dir)
    history = history_run(args.seconds, data_dir)
    counted = instruction_runs(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    report(args, rounds, persistence, history, counted)


def report(args, rounds, persistence, history, counted):
    def mid(pick):
        return statistics.median([pick(one) for one in rounds])

    print(f"\nweb-fe benchmark: {os.cpu_count()} cores, {CONNECTIONS} connections, "
          f"{args.seconds}s per run, load tool, web-fe and Redis on one machine; "
          f"medians of {len(rounds)} rounds")
    print(f"redis-benchmark -t incr -c {CONNECTIONS}: {mid(lambda o: o['incr'][0]):,.0f} req/s, "
          f"p99 {mid(lambda o: o['incr'][1]):.2f} ms")
    for k in ("off", "on"):
        for ceiling, log in (("nginx", "access log to /dev/null"), ("quiet_nginx", "no log")):
            print(f"nginx-light fixed 200, {log}, keep-alive {k}: "
                  f"{mid(lambda o: o[ceiling][k]['rps']):,.0f} req/s, "
                  f"p99 {mid(lambda o: o[ceiling][k]['p99_ms']):.2f} ms, "
                  f"CPU {mid(lambda o: o[ceiling][k]['cpu_us']):.0f} us/request")
    # CPU: the whole machine's busy time per request; Redis: its script time per view.
    print(f"{'route':15} {'keep-alive':10} {'req/s':>10} {'p99 ms':>8} {'vs INCR':>8} "
          f"{'vs nginx':>8} {'CPU us':>7} {'Redis us':>8} {'views/call':>10} {'errors':>7}")
    rows = [(k, path, lambda o, key=(path, k): o["runs"][key])
            for k in ("on", "off") for path in ("/api", "/", "/healthz")]
    rows += [(key[1], f"replicated {key[0]}", lambda o, key=key: o["replicated"][key])
             for key in (("/api", "on"), ("/", "off"))]
    worst_p99 = 0
    for k, name, run in rows:
        def fig(field, run=run):
            values = [run(o)[field] for o in rounds]
            return None if None in values else statistics.median(values)
        p99 = fig("p99_ms")
        worst_p99 = max(worst_p99, p99)
        redis_us, batch = fig("redis_us"), fig("batch")
        print(f"{name:15} {k:10} {fig('rps'):>10,.0f} {p99:>8.2f} "
              f"{mid(lambda o: run(o)['rps'] / o['incr'][0]):>8.2f} "
              f"{mid(lambda o: run(o)['rps'] / o['nginx'][k]['rps']):>8.2f} "
              f"{fig('cpu_us'):>7.0f} {'-' if redis_us is None else f'{redis_us:.1f}':>8} "
              f"{'-' if batch is None else f'{batch:.1f}':>10} "
              f"{sum(run(o)['non2xx'] for o in rounds):>7}")
    for name, target in TARGETS.items():
        values = [ratios(o)[name] for o in rounds]
        ratio = statistics.median(values)
        verdict = "met" if ratio >= target else "NOT met"
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"target: {name}: {ratio:.2f} (rounds: {each}; at least {target}): {verdict}")
    print("for comparison, / off vs nginx off without its log: "
          f"{mid(lambda o: o['runs'][('/', 'off')]['rps'] / o['quiet_nginx']['off']['rps']):.2f}")
    verdict = "met" if worst_p99 < P99_LIMIT_MS else "NOT met"
    print(f"target: p99 on every route above: worst median {worst_p99:.2f} ms "
          f"(under {P99_LIMIT_MS}): {verdict}")
    # With every core busy, throughput follows CPU per request.
    print(f"CPU per request, keep-alive off: nginx {mid(lambda o: o['nginx']['off']['cpu_us']):.0f} us, "
          f"/healthz {mid(lambda o: o['runs'][('/healthz', 'off')]['cpu_us']):.0f} us, "
          f"/ {mid(lambda o: o['runs'][('/', 'off')]['cpu_us']):.0f} us; by process, user + kernel:")
    for name, run in (("nginx", lambda o: o["nginx"]["off"]),
                      ("/healthz", lambda o: o["runs"][("/healthz", "off")]),
                      ("/", lambda o: o["runs"][("/", "off")])):
        parts = run(rounds[0])["split_us"]
        print(f"  {name:9} " + ", ".join(
            f"{who} {mid(lambda o, w=who, i=0: run(o)['split_us'][w][i]):.0f} + "
            f"{mid(lambda o, w=who, i=1: run(o)['split_us'][w][i]):.0f} us"
            for who in parts) +
            f"; cores busy {mid(lambda o: run(o)['busy_s'] / run(o)['core_s']):.1%}")
    for k in ("on", "off"):
        print(f"web-fe (keep-alive {k}): ready in {mid(lambda o: o['memory'][k]['ready_ms']):.1f} ms, "
              f"idle RSS {mid(lambda o: o['memory'][k]['idle_kib']) / 1024:.1f} MiB, "
              f"loaded RSS {mid(lambda o: o['memory'][k]['loaded_kib']) / 1024:.1f} MiB")
    print(f"A big board: {history['replicas']:,} replicas in Redis, / with keep-alive: "
          f"page {history['page_bytes']:,} bytes, {history['rps']:,.0f} req/s, "
          f"p99 {history['p99_ms']:.2f} ms")
    print(f"Instructions web-fe runs per request (callgrind, {INSTRUCTION_CLIENTS} clients, "
          "kernel not included): " + ", ".join(
              f"{path} keep-alive {k} {n / 1000:.1f}k" for (path, k), n in counted.items()))
    print("Redis persistence, /api with keep-alive:")
    for name, r in persistence:
        print(f"  {name:34} {r['rps']:>10,.0f} req/s  p99 {r['p99_ms']:.2f} ms")


# Instructions per request: fixed counts, unlike req/s, which on a shared machine swing by
# a fifth between runs minutes apart.
INSTRUCTION_RUNS = (("/", "off"), ("/healthz", "off"), ("/api", "on"), ("/healthz", "on"))
INSTRUCTION_CLIENTS = 20


def send_requests(port, path, count, keep_alive):
    """`count` GETs from INSTRUCTION_CLIENTS threads, each on one connection with keep-alive
    or a new one per request without; every answer must be a 200."""
    def client(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(n):
            if keep_alive == "off":
                conn.close()
            conn.request("GET", path, headers={} if keep_alive == "on"
                         else {"Connection": "close"})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{path} answered {answer.status}")
        conn.close()
    share = [count // INSTRUCTION_CLIENTS] * INSTRUCTION_CLIENTS
    with concurrent.futures.ThreadPoolExecutor(INSTRUCTION_CLIENTS) as pool:
        list(pool.map(client, share))


def instructions(port, redis_port, path, keep_alive, requests, data_dir):
    """Instructions web-fe's own code ran (callgrind's Ir, kernel not included) from start
    to exit, serving `requests` requests."""
    out = os.path.join(data_dir, f"callgrind-{port}.out")
    web, _ = start_web(port, redis_port, keep_alive, patience=120,
                       wrapper=("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"))
    try:
        send_requests(port, path, requests, keep_alive)
    finally:
        stop(web)
    with open(out) as f:
        totals = [line for line in f if line.startswith(("totals:", "summary:"))]
    os.remove(out)
    return int(totals[-1].split()[1])


def instruction_runs(data_dir, requests=2000):
    """Per request: the difference between serving 3N and N requests, over 2N, so that
    start-up and shutdown cancel out."""
    redis_port = free_port()
    redis = start_redis(redis_port, [], data_dir)
    try:
        return {(path, k): (instructions(free_port(), redis_port, path, k, 3 * requests,
                                         data_dir)
                            - instructions(free_port(), redis_port, path, k, requests,
                                           data_dir)) / (2 * requests)
                for path, k in INSTRUCTION_RUNS}
    finally:
        stop(redis)


HISTORY = 10_000

# Seeds replicas heard from in the last seconds, as in a very large deploy, in the keys
# web-fe uses: heartbeat times, what each said, views served.
SEED_HISTORY = """
local beat = '{"slot":"1","node":"n1","version":"0.9","started_ms":1,"activity":"serving","last_view_ms":null}'
for i = 1, tonumber(ARGV[2]) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) - i, 'old-replica-' .. i)
  redis.call('HSET', KEYS[2], 'old-replica-' .. i, beat)
  redis.call('HSET', KEYS[3], 'old-replica-' .. i, 7)
end
"""


def history_run(seconds, data_dir):
    """The page's cost with 10,000 replicas in Redis: it must not grow with them."""
    redis_port, port = free_port(), free_port()
    redis = start_redis(redis_port, [], data_dir)
    try:
        now_ms = str(int(time.time() * 1000))
        redis_cli(redis_port, "EVAL", SEED_HISTORY, "3", "replicas:heartbeat",
                  "replicas:presence", "replicas:served", now_ms, str(HISTORY))
        web, _ = start_web(port, redis_port, "on")
        try:
            wait_for_board(port)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as page:
                page_bytes = len(page.read())
            result = wrk(port, "/", seconds, close=False)
        finally:
            stop(web)
    finally:
        stop(redis)
    return {"replicas": HISTORY, "page_bytes": page_bytes, **result}


def wait_for_board(port):
    """The page shows the board once the first heartbeat has read it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/board") as answer:
            if json.load(answer)["read_at_ms"] > 0:
                return
        time.sleep(0.05)
    sys.exit("benchmark: no heartbeat within 10 s")


# What the Compose file and the stack's copies run: each command written before Redis
# answers, synced by the kernel.
SHIPPED_PERSISTENCE = ["--appendonly", "yes", "--appendfsync", "no"]


def replicated_runs(seconds, data_dir):
    """The stack's Redis copies in small: a master that refuses writes without a replica,
    one replica attached, and web-fe waiting for it (WAIT 1) after every batch of views."""
    master_port, replica_port = free_port(), free_port()
    master = start_redis(master_port, [*SHIPPED_PERSISTENCE, "--dbfilename", "master.rdb",
                                       "--appendfilename", "master.aof",
                                       "--min-replicas-to-write", "1",
                                       "--min-replicas-max-lag", "5"], data_dir)
    replica = start_redis(replica_port, [*SHIPPED_PERSISTENCE, "--dbfilename", "replica.rdb",
                                         "--appendfilename", "replica.aof",
                                         "--replicaof", "127.0.0.1", str(master_port)],
                          data_dir)
    results = {}
    try:
        for path, keep_alive in (("/api", "on"), ("/", "off")):
            port = free_port()
            web, _ = start_web(port, master_port, keep_alive)
            try:
                wait_for_copies(port, 2)
                results[(path, keep_alive)] = measure(port, path, seconds, keep_alive, master_port)
            finally:
                stop(web)
    finally:
        stop(replica)
        stop(master)
    return results


def wait_for_copies(port, wanted):
    """Views wait for a replica once the heartbeat has seen it on the master."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/board") as answer:
            if len(json.load(answer).get("redis_copies", [])) >= wanted:
                return
        time.sleep(0.1)
    sys.exit(f"benchmark: the board did not list {wanted} Redis copies within 20 s")


PERSISTENCE = [
    ("none", ["--appendonly", "no"]),
    ("appendonly, synced by the kernel", SHIPPED_PERSISTENCE),
    ("appendonly, fsync every second", ["--appendonly", "yes", "--appendfsync", "everysec"]),
    ("appendonly, fsync every write", ["--appendonly", "yes", "--appendfsync", "always"]),
]


def persistence_runs(seconds, data_dir):
    results = []
    for name, flags in PERSISTENCE:
        redis_port, port = free_port(), free_port()
        redis = start_redis(redis_port, flags, data_dir)
        try:
            web, _ = start_web(port, redis_port, "on")
            try:
                results.append((name, wrk(port, "/api", seconds, close=False)))
            finally:
                stop(web)
        finally:
            stop(redis)
    return results


if __name__ == "__main__":
    main()
