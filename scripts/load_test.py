"""Load test of `lift-mlx serve` on the tiny model, on loopback only.

    python scripts/load_test.py [--sequential 2000] [--concurrent 200] [--idle 64]
                                [--max-seconds 600] [--out load_test.json]

Starts its own server, `lift-mlx serve --model tiny` in a subprocess (port 0 on 127.0.0.1, a
fresh temporary library; its own process, so that the clients here share no interpreter lock
with it), runs three phases, each bounded in count and time, then stops it:

1. sequential: N chats one after another; the server's OS threads and resident memory at the
   start, after 100 chats and at the end (Linux's /proc; '-' elsewhere).
2. concurrent: M chats sent at once; successes, 503s that carry Retry-After, other failures,
   and the latency of each (median, p95, max), the 503s' apart.
3. idle: K sockets that connect and send nothing, kept open (reopened as the server drops
   them), while chats run one after another; median latency with and without them.

Prints a table and writes JSON.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from lift_mlx.bench import machine_info

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
MARKS = 100  # the sequential phase's threads and memory are compared with those after this


def threads_and_rss(pid: int) -> tuple[int | None, float | None]:
    """A process's OS threads and resident memory in MB (None where /proc is missing)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return len(os.listdir(f"/proc/{pid}/task")), pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None, None


def start_server(home: str) -> tuple[subprocess.Popen, tuple[str, int]]:
    """`lift-mlx serve --model tiny` on a free loopback port, and its address."""
    proc = subprocess.Popen([sys.executable, "-m", "lift_mlx.cli", "serve", "--model", "tiny",
                             "--port", "0", "--quiet"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LIFT_MLX_HOME": home})
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if m := re.search(r"API at http://([\d.]+):(\d+)/v1 ", line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain it
            return proc, (m[1], int(m[2]))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the server did not start")


def chat(address, model: str, timeout: float = 120) -> tuple[int, str | None, float]:
    """(status, Retry-After, seconds) of one chat on a connection of its own; status 0 when
    the connection failed."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "model": model}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After"), time.perf_counter() - start
    except OSError:
        return 0, None, time.perf_counter() - start
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def sequential(address, model: str, n: int, deadline: float, pid: int) -> dict:
    start_threads, start_rss = threads_and_rss(pid)
    marks = {}
    failures = done = 0
    for done in range(1, n + 1):
        failures += chat(address, model)[0] != 200
        if done == MARKS:
            marks = dict(zip(("threads_at_100", "rss_mb_at_100"), threads_and_rss(pid)))
        if time.monotonic() > deadline:
            break
    end_threads, end_rss = threads_and_rss(pid)
    return {"chats": done, "failures": failures, "threads_start": start_threads,
            "rss_mb_start": start_rss, **marks, "threads_end": end_threads,
            "rss_mb_end": end_rss}


def concurrent(address, model: str, m: int) -> dict:
    barrier = threading.Barrier(m, timeout=60)

    def one(_):
        barrier.wait()
        return chat(address, model)

    with ThreadPoolExecutor(m) as pool:
        results = list(pool.map(one, range(m)))
    ok = [t for status, _, t in results if status == 200]
    busy = [t for status, retry, t in results if status == 503 and retry]
    return {"chats": m, "ok": len(ok), "busy_503_retry_after": len(busy),
            "other_failures": m - len(ok) - len(busy),
            "ok_median_s": percentile(ok, 0.5), "ok_p95_s": percentile(ok, 0.95),
            "ok_max_s": max(ok, default=None), "busy_median_s": percentile(busy, 0.5),
            "busy_p95_s": percentile(busy, 0.95), "busy_max_s": max(busy, default=None)}


def latencies(address, model: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        status, _, seconds = chat(address, model)
        if status == 200:
            out.append(seconds)
    return out


def idle(address, model: str, k: int, count: int) -> dict:
    without = latencies(address, model, count)
    stop = threading.Event()
    opened = [0]

    def hold():  # k silent connections at all times: the server drops each after a while
        sockets = []
        while not stop.is_set():
            sockets = [s for s in sockets if not _closed(s)]
            while len(sockets) < k:
                sockets.append(socket.create_connection(address))
                opened[0] += 1
            stop.wait(0.2)
        for s in sockets:
            s.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    time.sleep(0.5)
    with_idle = latencies(address, model, count)
    stop.set()
    holder.join(10)
    return {"idle_sockets": k, "chats": count, "served_with_idle": len(with_idle),
            "median_s_without": percentile(without, 0.5),
            "median_s_with_idle": percentile(with_idle, 0.5),
            "idle_sockets_opened": opened[0]}


def _closed(s: socket.socket) -> bool:
    try:
        s.setblocking(False)
        data = s.recv(1, socket.MSG_PEEK)
        closed = data == b""
    except BlockingIOError:
        closed = False
    except OSError:
        closed = True
    if closed:
        s.close()
    else:
        s.setblocking(True)
    return closed


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@click.command()
@click.option("--sequential", "n", default=2000, show_default=True, help="Chats one by one.")
@click.option("--concurrent", "m", default=200, show_default=True, help="Chats sent at once.")
@click.option("--idle", "k", default=64, show_default=True, help="Silent sockets held open.")
@click.option("--idle-chats", default=50, show_default=True,
              help="Chats timed with and without the idle sockets.")
@click.option("--max-seconds", default=600.0, show_default=True,
              help="Longest the sequential phase runs; it stops early past it.")
@click.option("--out", default="load_test.json", show_default=True)
def main(n, m, k, idle_chats, max_seconds, out):
    home = tempfile.mkdtemp(prefix="lift-load-")  # a library of its own: the user's is untouched
    server, address = start_server(home)
    model = "tiny"
    began = time.perf_counter()
    try:
        results = {"sequential": sequential(address, model, n, time.monotonic() + max_seconds,
                                            server.pid),
                   "concurrent": concurrent(address, model, m),
                   "idle": idle(address, model, k, idle_chats)}
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)
    results["seconds"] = time.perf_counter() - began
    results["machine"] = machine_info()
    print("phase        measure                       value")
    for phase in ("sequential", "concurrent", "idle"):
        for measure, value in results[phase].items():
            print(f"{phase:<12} {measure:<29} {_fmt(value)}")
    print(f"all in {results['seconds']:.0f}s; JSON in {out}")
    Path(out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
