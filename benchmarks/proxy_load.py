"""Load test of the chat proxy: the latency it adds per checked sentence and per request. Prints figures;
asserts nothing.

    .venv/bin/python -m benchmarks.proxy_load [--model embedded] [--screen FOLDER] [--no-cut]
        [--clients 32] [--duration 60] [--chunk-ms 20]

It starts two processes on 127.0.0.1: a scripted OpenAI-compatible upstream that streams a fixed six-sentence
reply in chunks of three words every --chunk-ms, and ``python -m guardreasoner proxy`` in front of it (reasoning
off: the screen judges the request, then the reply so far at every sentence end). Then, for --duration seconds
each, --clients clients stream that reply straight from the upstream ("direct"), then through the proxy, then
ask for it whole (not streamed), direct and through the proxy. Each client waits for its answer before the next.

Reported per run: requests, errors (non-200, transport failures, error events), lost (a stream that ended
without [DONE], or with text other than the reply, and was not cut: should be 0), cut (ended with
content_filter: the screen's false positives on this harmless reply), requests/s, time to first content and to
the whole answer. Added latency per checked sentence: from the moment the upstream sent the chunk that completed
a sentence to the moment a client received that sentence through the proxy (hold-back, check and queueing for
the screen), minus a chunk's median trip straight from the upstream; per request: the whole answer's latency
through the proxy (the request's check and the reply's) minus its median direct latency.

--no-cut sets the screen's cuts above 1 in the proxy process: it computes every probability as usual (the same
cost) but flags nothing, so a screen whose false positives would end the streams early still streams them
whole. Say so when reporting figures measured with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from benchmarks.service_load import wait_ready

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PROMPT = "Write a short note about autumn."
SENTENCES = ["Autumn is the season between summer and winter.", "The days grow shorter and the air turns cool.",
             "Many trees drop their leaves after they turn red and gold.", "Farmers bring in the last of the harvest.",
             "People often walk in the parks to see the colours.", "It is a calm and pleasant time of year."]
REPLY = " ".join(SENTENCES)
WORDS_PER_CHUNK = 3
SENT_AT = "sent-at:"


def reply_chunks() -> list[str]:
    words = REPLY.split(" ")
    pieces = [" ".join(words[i:i + WORDS_PER_CHUNK]) for i in range(0, len(words), WORDS_PER_CHUNK)]
    return [piece + (" " if i < len(pieces) - 1 else "") for i, piece in enumerate(pieces)]


def upstream_app(chunk_ms: float):
    app = FastAPI()

    def event(delta: dict, finish: str | None = None) -> str:
        # When the chunk left, on the machine's monotonic clock (the clients read the same clock): the proxy keeps
        # the envelope of the chunk that completed the sentence it releases, so a client sees when that left.
        body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "scripted",
                "system_fingerprint": f"{SENT_AT}{time.monotonic():.6f}",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body)}\n\n"

    async def stream():
        yield event({"role": "assistant", "content": ""})
        for piece in reply_chunks():
            await asyncio.sleep(chunk_ms / 1000)
            yield event({"content": piece})
        yield event({}, "stop")
        yield "data: [DONE]\n\n"

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if body.get("stream"):
            return StreamingResponse(stream(), media_type="text/event-stream")
        return {"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "scripted",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": SENTENCES[0]},
                             "finish_reason": "stop"}]}

    @app.get("/health")
    def health():
        return {"status": "ok"}

    return app


def serve_proxy(args) -> None:
    """The proxy as ``python -m guardreasoner proxy`` runs it, with --no-cut's raised cuts where asked."""
    import uvicorn

    from guardreasoner.loading import load_guard
    from guardreasoner.service import ServiceSettings
    from guardreasoner.service.proxy import ProxySettings, create_proxy_app

    guard = load_guard(args.model, reasoning="off", screen=args.screen)
    if args.no_cut:
        for head in guard.screen.heads.values():
            head.thresholds.cut = 1.01
    settings = ProxySettings(upstream=f"http://{HOST}:{args.upstream_port}/v1", upstream_timeout_s=30)
    app = create_proxy_app(guard, settings, ServiceSettings(request_timeout_s=30))
    uvicorn.run(app, host=HOST, port=args.proxy_port, log_level="warning", access_log=False)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def stream_once(client, url: str) -> dict:
    began = time.perf_counter()
    text, delays, first, finish, done = "", [], None, None, False
    body = {"model": "scripted", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    async with client.stream("POST", url, json=body) as answer:
        if answer.status_code != 200:
            return {"error": f"status {answer.status_code}"}
        async for line in answer.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line[6:] == "[DONE]":
                done = True
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return {"error": chunk["error"].get("message", "error event")}
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                now = time.perf_counter() - began
                if content:
                    first = first if first is not None else now
                    text += content
                    delays.append(time.monotonic() - float(chunk["system_fingerprint"].removeprefix(SENT_AT)))
                finish = choice.get("finish_reason") or finish
    cut = finish == "content_filter"
    return {"first": first, "total": time.perf_counter() - began, "delays": delays, "cut": cut,
            "lost": not cut and (not done or text != REPLY)}


async def whole_once(client, url: str) -> dict:
    began = time.perf_counter()
    answer = await client.post(url, json={"model": "scripted", "messages": [{"role": "user", "content": PROMPT}]})
    if answer.status_code != 200:
        return {"error": f"status {answer.status_code}"}
    choice = answer.json()["choices"][0]
    cut = choice["finish_reason"] == "content_filter"
    return {"first": None, "total": time.perf_counter() - began, "cut": cut,
            "lost": not cut and choice["message"]["content"] != SENTENCES[0]}


async def run(url: str, streamed: bool, clients: int, duration: float) -> dict:
    import httpx

    results: list[dict] = []
    sent = 0
    stop_at = time.perf_counter() + duration

    async def client_loop(client):
        nonlocal sent
        while time.perf_counter() < stop_at:
            sent += 1
            try:
                results.append(await (stream_once if streamed else whole_once)(client, url))
            except Exception as error:  # transport failures count as errors, never stop the run
                results.append({"error": f"{type(error).__name__}: {error}"})

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    good = [r for r in results if "error" not in r]
    return {"sent": sent, "answered": len(results), "results": good, "elapsed": elapsed,
            "errors": [r["error"] for r in results if "error" in r]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--screen", help="screen folder (default: the model's shipped one)")
    parser.add_argument("--no-cut", action="store_true", help="the screen computes as usual but flags nothing")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run (four runs)")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="the upstream's pause before each chunk")
    parser.add_argument("--upstream-port", type=int, default=18431)
    parser.add_argument("--proxy-port", type=int, default=18432)
    parser.add_argument("--role", choices=["bench", "upstream", "proxy"], default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        import uvicorn

        uvicorn.run(upstream_app(args.chunk_ms), host=HOST, port=args.upstream_port, log_level="warning",
                    access_log=False)
        return 0
    if args.role == "proxy":
        serve_proxy(args)
        return 0

    own = [sys.executable, "-m", "benchmarks.proxy_load", *sys.argv[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([*own, "--role", role], cwd=ROOT, env=env) for role in ("upstream", "proxy")]
    upstream, proxy = (f"http://{HOST}:{port}" for port in (args.upstream_port, args.proxy_port))
    try:
        wait_ready(upstream, processes[0], 60)
        wait_ready(proxy, processes[1], 600)
        asyncio.run(run(proxy + "/v1/chat/completions", True, 1, 0.1))  # warm-up
        runs = {}
        for name, base, streamed in (("direct stream", upstream, True), ("proxy stream", proxy, True),
                                     ("direct whole", upstream, False), ("proxy whole", proxy, False)):
            runs[name] = asyncio.run(run(base + "/v1/chat/completions", streamed, args.clients, args.duration))
            print(f"{name}: {runs[name]['answered']} answered", file=sys.stderr, flush=True)
        checks = proxy_checks(proxy)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    report(runs, args, checks)
    return 0


def shown(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.0f}ms"  # NaN: no streamed content in this run


def proxy_checks(proxy: str) -> dict[str, float]:
    """The proxy's own check series from its /metrics: calls to the screen, checks, seconds per check."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"guardreasoner_proxy_check_batch_count": "calls", "guardreasoner_proxy_check_batch_sum": "checks",
              "guardreasoner_proxy_check_seconds_sum": "seconds"}
    found = {}
    for family in text_string_to_metric_families(httpx.get(proxy + "/metrics").text):
        for sample in family.samples:
            if sample.name in wanted:
                found[wanted[sample.name]] = sample.value
    return found


def report(runs: dict, args, checks: dict[str, float]) -> None:
    ms = 1000
    print(f"\n{args.clients} clients, {args.duration:.0f} s per run, model {args.model}, screen "
          f"{args.screen or 'shipped'}{' (--no-cut)' if args.no_cut else ''}, a chunk of {WORDS_PER_CHUNK} words "
          f"every {args.chunk_ms:.0f} ms, {len(SENTENCES)} sentences per reply\n")
    print(f"{'run':<15}{'requests':>9}{'errors':>7}{'lost':>6}{'cut':>5}{'req/s':>7}"
          f"{'first p50':>11}{'first p95':>11}{'total p50':>11}{'total p95':>11}")
    for name, run_ in runs.items():
        good = run_["results"]
        firsts = [r["first"] for r in good if r.get("first") is not None]
        totals = [r["total"] for r in good]
        print(f"{name:<15}{run_['answered']:>9}{len(run_['errors']):>7}{sum(r['lost'] for r in good):>6}"
              f"{sum(r['cut'] for r in good):>5}{run_['answered'] / run_['elapsed']:>7.1f}"
              f"{shown(percentile(firsts, .5)):>11}{shown(percentile(firsts, .95)):>11}"
              f"{percentile(totals, .5) * ms:>9.0f}ms{percentile(totals, .95) * ms:>9.0f}ms")
        for error in sorted(set(run_["errors"]))[:3]:
            print(f"  error: {error}")
    if not all(runs[name]["results"] for name in runs):
        print("\nno answers to compare: see the errors above")
        return
    direct = [delay for r in runs["direct stream"]["results"] for delay in r["delays"]]
    checked = [delay for r in runs["proxy stream"]["results"] for delay in r["delays"]]
    transport = statistics.median(direct)
    added = [delay - transport for delay in checked]
    whole = statistics.median(r["total"] for r in runs["direct whole"]["results"])
    per_request = [r["total"] - whole for r in runs["proxy whole"]["results"]]
    print(f"\nadded per checked sentence (stream): p50 {percentile(added, .5) * ms:.1f} ms, "
          f"p95 {percentile(added, .95) * ms:.1f} ms over {len(added)} sentences (a chunk's trip straight from the "
          f"upstream: p50 {transport * ms:.1f} ms, p95 {percentile(direct, .95) * ms:.1f} ms)")
    print(f"added per request (whole, one-sentence reply): p50 {percentile(per_request, .5) * ms:.1f} ms, "
          f"p95 {percentile(per_request, .95) * ms:.1f} ms over {len(per_request)} requests")
    if checks.get("calls"):
        per_call, per_check = checks["checks"] / checks["calls"], checks["seconds"] / checks["checks"] * ms
        print(f"the proxy's checks (warm-up included): {checks['checks']:.0f} in {checks['calls']:.0f} screen calls "
              f"({per_call:.1f} per call), {per_check:.1f} ms per check on average from asked to answered")


if __name__ == "__main__":
    raise SystemExit(main())
