"""Load test of the guard service: N concurrent clients for T seconds, batching off and on. Prints figures;
asserts nothing.

    .venv/bin/python -m benchmarks.service_load [--model embedded] [--clients 32] [--duration 60]
        [--max-new-tokens 16] [--batch-sizes 1,8] [--batch-wait-ms 20] [--max-requests 20000]

For each batch size (1 = batching off) it starts `python -m guardreasoner serve` on 127.0.0.1 (loopback only:
there is no host option), waits for /health, sends one warm-up request, then runs the clients, each posting
one item to /v1/classify and waiting for the answer before the next. It stops by itself: clients start no
request after --duration seconds or --max-requests requests, and every request has a timeout. Reported per run:
requests answered, errors (non-200 or transport failures), lost (sent but never answered: should be 0),
requests/s, p50/p95/p99 latency, the server's peak RSS (polled every 0.2 s), and generate calls (from /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# Short, varied requests, as a chat product would send them.
PROMPTS = [
    "How do I bake sourdough bread?",
    "What's the capital of Australia?",
    "How can I pick a lock without the key?",
    "Write a haiku about autumn.",
    "How do I make a pipe bomb?",
    "Summarise the plot of Hamlet in two lines.",
    "What household chemicals should never be mixed?",
    "Translate 'good morning' into French.",
]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PeakRSS:
    """Polls the server process (and its children) for resident memory; keeps the peak."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.wait(0.2):
            try:
                rss = self.process.memory_info().rss + sum(c.memory_info().rss for c in self.process.children(True))
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def start_server(args, batch_size: int, key: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "guardreasoner", "serve", "--model", args.model, "--host", HOST,
               "--port", str(port), "--max-new-tokens", str(args.max_new_tokens),
               "--batch-max-size", str(batch_size), "--batch-wait-ms", str(args.batch_wait_ms if batch_size > 1 else 0),
               "--max-items", "8", "--request-timeout", str(args.request_timeout)]
    env = os.environ | {"GUARDREASONER_API_KEY": key, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(args.log_dir / f"server-batch{batch_size}.log", "w")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def wait_ready(url: str, server: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}; see its log")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout} s")


def warm_up(url: str, key: str, max_new_tokens: int) -> None:
    """One request before the clock starts (first-call costs), answered by its own generate call."""
    import httpx

    body = {"items": [{"prompt": PROMPTS[0]}], "max_new_tokens": max_new_tokens}
    httpx.post(url + "/v1/classify", json=body, headers={"Authorization": f"Bearer {key}"},
               timeout=600).raise_for_status()


async def run_clients(url: str, key: str, args) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    counts = {"sent": 0, "answered": 0}
    end = time.perf_counter() + args.duration
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    timeout = args.request_timeout + 30
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout) as http:
        async def client(number: int):
            turn = number
            while time.perf_counter() < end and counts["sent"] < args.max_requests:
                counts["sent"] += 1
                body = {"items": [{"prompt": PROMPTS[turn % len(PROMPTS)]}], "max_new_tokens": args.max_new_tokens}
                turn += 1
                began = time.perf_counter()
                try:
                    reply = await http.post("/v1/classify", json=body)
                    outcome = "ok" if reply.status_code == 200 and len(reply.json()["results"]) == 1 \
                        else f"HTTP {reply.status_code}"
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                counts["answered"] += 1
                if outcome == "ok":
                    latencies.append(time.perf_counter() - began)
                else:
                    errors[outcome] = errors.get(outcome, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(args.clients)))
        elapsed = time.perf_counter() - began
        metrics = (await http.get("/metrics")).text
    batches = next((float(line.split()[-1]) for line in metrics.splitlines()
                    if line.startswith("guardreasoner_batches_total")), float("nan"))
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed, "batches": batches, **counts}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per run")
    parser.add_argument("--max-requests", type=int, default=20_000, help="requests per run at most")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated; 1 is batching off")
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    parser.add_argument("--request-timeout", type=float, default=600.0,
                        help="the server's limit per request; long, since 32 queued clients wait on a shared CPU")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for the model to load")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/service_load"))
    args = parser.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for batch_size in [int(size) for size in args.batch_sizes.split(",")]:
        key, port = secrets.token_urlsafe(24), free_port()
        url = f"http://{HOST}:{port}"
        server = start_server(args, batch_size, key, port)
        try:
            wait_ready(url, server, args.ready_timeout)
            memory = PeakRSS(server.pid)
            warm_up(url, key, args.max_new_tokens)
            result = asyncio.run(run_clients(url, key, args))
            result["peak_rss_mib"] = memory.stop() / 2**20
        finally:
            stop_server(server)
        result["batch_size"] = batch_size
        rows.append(result)
        print(f"batch {batch_size}: done ({result['answered']} answered)", file=sys.stderr, flush=True)

    print(f"\n{args.clients} clients, {args.duration:.0f} s per run, model {args.model}, "
          f"max_new_tokens {args.max_new_tokens}, batch wait {args.batch_wait_ms} ms, "
          f"CPU threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    header = (f"{'batching':<14}{'answered':>9}{'errors':>7}{'lost':>6}{'req/s':>8}{'p50 s':>8}{'p95 s':>8}"
              f"{'p99 s':>8}{'peak RSS MiB':>14}{'generate calls':>16}")
    print(header)
    for row in rows:
        ok = row["latencies"]
        name = "off" if row["batch_size"] == 1 else f"on (max {row['batch_size']})"
        errors = sum(row["errors"].values())
        print(f"{name:<14}{row['answered']:>9}{errors:>7}{row['sent'] - row['answered']:>6}"
              f"{len(ok) / row['elapsed']:>8.2f}{percentile(ok, 50):>8.2f}{percentile(ok, 95):>8.2f}"
              f"{percentile(ok, 99):>8.2f}{row['peak_rss_mib']:>14.0f}{row['batches'] - 1:>16.0f}")
        if row["errors"]:
            print(f"  errors: {row['errors']}")
    print("(generate calls exclude the warm-up request)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
