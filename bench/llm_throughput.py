"""LLM layer throughput against a local fake server that answers after a fixed 200 ms.

Prints: achieved requests/s at concurrency 16 as a fraction of the ideal 16 / 0.2 s (target
>= 0.8), the ratio against one-at-a-time calls measured in the same run, and a warm-cache rerun
of 10,000 items (target: zero requests, <= 10 s).

    .venv/bin/python bench/llm_throughput.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

import wavecoder as wc  # noqa: E402
from wavecoder import llm  # noqa: E402


def serve_forever(delay_s: float, url_queue) -> None:
    """A minimal OpenAI-compatible chat server on 127.0.0.1 (the benchmark's own: bench never
    imports tests/): every POST /v1/chat/completions is answered after `delay_s` with a text
    that depends only on the request; GET /stats counts the requests answered so far."""
    lock = threading.Lock()
    answered = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/stats":
                with lock:
                    self._send(200, {"requests": answered[0]})
            else:
                self._send(200, {"object": "list", "data": [{"id": "bench"}]})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": "not found"}})
                return
            time.sleep(delay_s)
            body = json.loads(raw or b"{}")
            content = "answer " + hashlib.sha256(raw).hexdigest()[:16]
            with lock:
                answered[0] += 1
            message = {"role": "assistant", "content": content}
            usage = {"prompt_tokens": len(raw) // 4, "completion_tokens": 6, "total_tokens": 0}
            try:
                self._send(
                    200,
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "bench"),
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": usage,
                    },
                )
            except (BrokenPipeError, ConnectionResetError):  # the client timed out
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 128
    url_queue.put(f"http://127.0.0.1:{server.server_address[1]}/v1")
    server.serve_forever()


@contextlib.contextmanager
def fake_server(delay_s: float):
    """The fake server in its own process, so it does not share the client's GIL."""
    queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=serve_forever, args=(delay_s, queue), daemon=True)
    proc.start()
    try:
        yield queue.get(timeout=30)
    finally:
        proc.terminate()
        proc.join(5)


def sent(url: str) -> int:
    import httpx

    return httpx.get(url.removesuffix("/v1") + "/stats", timeout=10).json()["requests"]


def params_for(url: str, concurrency: int):
    return wc.load_params(
        ROOT / "params" / "smoke.yaml",
        {
            "llm.generator.backend": "openai",
            "llm.generator.base_url": url,
            "llm.generator.model": "bench",
            "llm.concurrency": concurrency,
            "llm.timeout_s": 30,
            "llm.fsync": True,
        },
    )


async def raw_httpx(url: str, n: int, concurrency: int) -> float:
    """Ceiling of this machine and server: plain httpx posts, no client library, no cache."""
    import httpx

    limit = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(i: int) -> None:
            async with limit:
                body = {"model": "bench", "messages": [{"role": "user", "content": f"raw {i}"}]}
                (await client.post(url + "/chat/completions", json=body)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - started)


async def run(params, cache: Path, prompts: list[str]) -> tuple[float, llm.CallStats, int]:
    async with llm.LLMSession.for_generation(params.llm, cache) as session:
        started = time.perf_counter()
        results = await llm.chat_many(
            session, "generator", [[{"role": "user", "content": p}] for p in prompts]
        )
        seconds = time.perf_counter() - started
    return seconds, session.stats, sum(r.ok for r in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--serial-requests", type=int, default=20)
    parser.add_argument("--warm-items", type=int, default=10_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llm_bench_"))

    with fake_server(args.delay) as url:
        params = params_for(url, 1)
        prompts = [f"serial {i}" for i in range(args.serial_requests)]
        serial_s, _, ok = asyncio.run(run(params, tmp / "serial.jsonl", prompts))
        serial_rps = ok / serial_s

        params = params_for(url, args.concurrency)
        prompts = [f"concurrent {i}" for i in range(args.requests)]
        conc_s, stats, ok = asyncio.run(run(params, tmp / "concurrent.jsonl", prompts))
        conc_rps = ok / conc_s
        ideal = args.concurrency / args.delay
        raw_rps = asyncio.run(raw_httpx(url, args.requests, args.concurrency))

    print(f"one at a time : {serial_rps:7.1f} req/s ({args.serial_requests} requests)")
    print(
        f"concurrency {args.concurrency}: {conc_rps:7.1f} req/s ({args.requests} requests, "
        f"{stats.requests} sent)"
    )
    print(f"ideal         : {ideal:7.1f} req/s (concurrency / {args.delay} s)")
    fraction = conc_rps / ideal
    verdict = "PASS" if fraction >= 0.8 else "FAIL"
    print(f"fraction of ideal: {fraction:.2f} (target >= 0.8: {verdict})")
    print(f"speed-up over one at a time: {conc_rps / serial_rps:.1f}x")
    print(
        f"plain httpx at concurrency {args.concurrency} (machine/server ceiling): "
        f"{raw_rps:.1f} req/s; the LLM layer reaches {conc_rps / raw_rps:.2f} of it"
    )

    # warm cache: answer 10,000 items once (no delay), then rerun them all from the cache
    with fake_server(0.0) as url:
        params = params_for(url, 64)
        params.llm.fsync = False
        prompts = [f"warm item {i}" for i in range(args.warm_items)]
        cold_s, _, ok = asyncio.run(run(params, tmp / "warm.jsonl", prompts))
        sent_cold = sent(url)
        started = time.perf_counter()
        warm_s, stats, ok_warm = asyncio.run(run(params, tmp / "warm.jsonl", prompts))
        total_warm = time.perf_counter() - started  # includes loading the cache file
        sent_warm = sent(url) - sent_cold
    verdict = "PASS" if sent_warm == 0 and total_warm <= 10 and ok_warm == len(prompts) else "FAIL"
    print(
        f"cold run of {len(prompts):,} items: {cold_s:.1f} s, {sent_cold:,} requests; "
        f"warm rerun: {total_warm:.2f} s, {sent_warm} requests, {stats.from_cache:,} from cache "
        f"(target 0 requests, <= 10 s: {verdict})"
    )


if __name__ == "__main__":
    main()
