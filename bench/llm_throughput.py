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
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wavecoder as wc  # noqa: E402
from wavecoder import llm  # noqa: E402

from tests.fake_openai_server import serve_forever  # noqa: E402


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
    async with llm.LLMSession(params.llm, cache) as session:
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
