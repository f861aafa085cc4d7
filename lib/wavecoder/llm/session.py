"""Chat calls through named endpoints: cached, retried with backoff, priced, bounded by a budget;
embedded servers started lazily and stopped on exit; batch mode through `llm.batch`."""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavecoder.config import LLMEndpoint, LLMParams
from wavecoder.llm.cache import ResponseCache, cache_key
from wavecoder.llm.endpoints import (
    check_endpoints,
    gguf_for,
    json_mode_of,
    needs_key,
    resolve_api_key,
    response_format,
    stage02_endpoints,
)
from wavecoder.llm.server import EmbeddedServer


class MalformedResponse(Exception):
    """The endpoint answered 2xx with a body that is not a chat completion."""


@dataclass
class ChatResult:
    key: str
    role: str
    ok: bool
    text: str | None = None
    error: str | None = None
    cached: bool = False
    attempts: int = 0
    latency_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    finish_reason: str | None = None
    model: str = ""


@dataclass
class CallStats:
    """Tally of one session; `requests` counts HTTP requests actually sent (in batch mode:
    lines sent in batch jobs)."""

    requests: int = 0
    retries: int = 0
    answered: int = 0
    from_cache: int = 0
    failed: int = 0
    budget_stopped: int = 0
    prompt_tokens: int = 0  # over every answer used (new and cached)
    completion_tokens: int = 0
    new_prompt_tokens: int = 0  # spent by this session's calls
    new_completion_tokens: int = 0
    cost_usd: float = 0.0  # of every answer used
    new_cost_usd: float = 0.0
    errors: Counter = field(default_factory=Counter)  # reason -> count, every failed attempt
    failures: Counter = field(default_factory=Counter)  # reason -> calls that failed for good
    latencies: list[float] = field(default_factory=list)  # of answers used (cached: original)
    notes: list[str] = field(default_factory=list)
    batches_submitted: int = 0  # batch mode: jobs sent
    batches_resumed: int = 0  # open jobs of an earlier (killed) run collected
    batch_lines_resubmitted: int = 0  # expired or failed lines sent again
    batch_lines_failed: int = 0  # lines that failed for good (past llm.batch.max_resubmits)

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def q(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

        return {
            "requests": self.requests,
            "retries": self.retries,
            "answered_new": self.answered,
            "from_cache": self.from_cache,
            "failed": self.failed,
            "budget_stopped": self.budget_stopped,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "new_prompt_tokens": self.new_prompt_tokens,
            "new_completion_tokens": self.new_completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "new_cost_usd": round(self.new_cost_usd, 6),
            "errors": dict(self.errors),
            "failures": dict(self.failures),
            "latency_p50_s": q(0.5),
            "latency_p90_s": q(0.9),
            "latency_max_s": lat[-1] if lat else None,
            "batches_submitted": self.batches_submitted,
            "batches_resumed": self.batches_resumed,
            "batch_lines_resubmitted": self.batch_lines_resubmitted,
            "batch_lines_failed": self.batch_lines_failed,
            "notes": self.notes,
        }


def price_of(prices: dict[str, tuple[float, float]], model: str, prompt: int, completion: int):
    """USD for a call, or None when the table has no price for the model."""
    if model not in prices:
        return None
    per_in, per_out = prices[model]
    return (prompt * per_in + completion * per_out) / 1_000_000


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` / `Retry-After` (seconds or an HTTP date), if any."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------- the session


@dataclass
class _Endpoint:
    role: str
    cfg: LLMEndpoint
    api_key: str
    json_mode: str
    server: EmbeddedServer | None = None
    client: Any = None
    lock: asyncio.Lock | None = None


class LLMSession:
    """Chat calls through named endpoints, cached, retried, bounded.

    `endpoints` maps a role name (what `chat` is asked for) to its `LLMEndpoint`; `settings`
    (an `LLMParams`) gives what the endpoints share: mode, concurrency, timeouts, retries and
    backoff, default temperature and max_tokens, prices, budget, fsync, batch options (its own
    `generator` and `discriminator` are not used here). Stage 02 uses
    `LLMSession.for_generation(params.llm, cache_path)`: its generator and discriminator.

    Use as `async with LLMSession({"model": endpoint}, params.llm, cache_path) as llm:
    await llm.chat("model", messages)`. Embedded servers start lazily on the first cache miss (a
    warm rerun starts none), one per model however many roles use it, and always stop on exit.
    With `llm.mode: batch`, cache misses go out as batch jobs (`llm.batch`); their request,
    output and state files live in `batch_dir` (default: `<log_dir>/batches`, else next to the
    cache)."""

    def __init__(
        self,
        endpoints: Mapping[str, LLMEndpoint],
        settings: LLMParams,
        cache_path: str | Path,
        *,
        resolve: Callable[[str], Path] | None = None,
        log_dir: str | Path | None = None,
        seed: int = 0,
        batch_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        if not endpoints:
            raise ValueError("LLMSession needs at least one endpoint")
        check_endpoints(settings, resolve, endpoints)  # before any work
        self.params = settings
        self.seed = seed
        self.cache = ResponseCache(cache_path, fsync=settings.fsync)
        self.stats = CallStats()
        self.semaphore: asyncio.Semaphore | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._jitter = random.Random()
        self._servers: dict[tuple, EmbeddedServer] = {}
        self._restarts = 0
        self.endpoints: dict[str, _Endpoint] = {}
        for role, cfg in endpoints.items():
            key = resolve_api_key(cfg, role) if needs_key(settings) else "no-key-needed"
            endpoint = _Endpoint(role, cfg, key, json_mode_of(cfg))
            if cfg.backend == "embedded":
                gguf = gguf_for(cfg, resolve)
                ident = (str(gguf), cfg.model, cfg.n_ctx, cfg.n_threads, cfg.extra_bufts)
                if ident not in self._servers:  # one server when several roles share the model
                    log = (
                        Path(log_dir) / f"llama_server_{len(self._servers)}.log"
                        if log_dir
                        else None
                    )
                    self._servers[ident] = EmbeddedServer(
                        gguf,
                        cfg.model,
                        cfg.n_ctx,
                        cfg.n_threads,
                        log,
                        cfg.startup_timeout_s,
                        cfg.extra_bufts,
                    )
                endpoint.server = self._servers[ident]
            self.endpoints[role] = endpoint
        if self.cache.torn_lines:
            self.stats.notes.append(f"cache: skipped {self.cache.torn_lines} torn line(s)")
        self.batch = None
        if settings.mode == "batch":
            from wavecoder.llm.batch import BatchCoordinator

            if batch_dir is None:
                base = Path(log_dir) if log_dir else Path(cache_path).parent
                batch_dir = base / "batches"
            self.batch = BatchCoordinator(self, Path(batch_dir), progress)

    @classmethod
    def for_generation(cls, llm: LLMParams, cache_path: str | Path, **options: Any) -> LLMSession:
        """Stage 02's session: roles `generator` and `discriminator` from `llm`, which also
        gives the shared settings. `options`: those of the constructor (resolve, log_dir...)."""
        return cls(stage02_endpoints(llm), llm, cache_path, **options)

    # -- lifecycle

    async def __aenter__(self) -> LLMSession:
        self.semaphore = asyncio.Semaphore(self.params.concurrency)
        for endpoint in self.endpoints.values():
            endpoint.lock = asyncio.Lock()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.batch is not None:
            await self.batch.aclose()
        for endpoint in self.endpoints.values():
            if endpoint.client is not None:
                try:
                    await endpoint.client.close()
                except Exception:  # closing must not mask the run's own error
                    pass
                endpoint.client = None
        self.close_sync()

    def close_sync(self) -> None:
        for server in self._servers.values():
            server.stop()
        self.cache.close()

    @property
    def servers_started(self) -> int:
        return sum(1 for s in self._servers.values() if s.port is not None)

    def model_of(self, role: str) -> str:
        return self.endpoints[role].cfg.model

    def settings_for(self, role: str, json_schema: dict[str, Any] | None = None) -> dict[str, Any]:
        """Generation settings for a role; they enter the cache key."""
        endpoint = self.endpoints[role]
        cfg = endpoint.cfg
        settings: dict[str, Any] = {
            "temperature": cfg.temperature
            if cfg.temperature is not None
            else self.params.temperature,
            "max_tokens": cfg.max_tokens if cfg.max_tokens is not None else self.params.max_tokens,
            "seed": self.seed,
        }
        if json_schema is not None:
            fmt = response_format(endpoint.json_mode, json_schema)
            if fmt is not None:
                settings["response_format"] = fmt
        return settings

    async def _client(self, endpoint: _Endpoint):
        async with endpoint.lock:
            if endpoint.client is None:
                from openai import AsyncOpenAI

                base_url = endpoint.cfg.base_url
                if endpoint.server is not None:
                    if endpoint.server.proc is None:
                        await asyncio.to_thread(endpoint.server.start)
                    base_url = endpoint.server.base_url
                endpoint.client = AsyncOpenAI(
                    api_key=endpoint.api_key,
                    base_url=base_url,
                    max_retries=0,  # retries are ours: bounded, logged, Retry-After honoured
                    timeout=self.params.timeout_s,
                )
            return endpoint.client

    async def _revive(self, endpoint: _Endpoint) -> None:
        """Restart an embedded server that died (bounded), so one crash does not fail every
        later call; the client is rebuilt for the new port."""
        server = endpoint.server
        if server is None or server.proc is None or server.proc.poll() is None:
            return
        async with endpoint.lock:
            if server.proc is None or server.proc.poll() is None:
                return  # another call already restarted it
            code = server.proc.returncode
            server.stop()
            if self._restarts >= self.params.max_retries:
                self.stats.notes.append(f"embedded server died ({code}); not restarted again")
                return
            self._restarts += 1
            self.stats.notes.append(f"embedded server died ({code}); restarted")
            for other in self.endpoints.values():
                if other.server is server and other.client is not None:
                    await other.client.close()
                    other.client = None
            await asyncio.to_thread(server.start)

    # -- rounds (batch mode gathers a round's calls into one job; interactive mode ignores them)

    def begin_round(self, participants: int) -> None:
        """`participants` coroutines will now make calls; each says `participant_done()` when
        it will make no more."""
        if self.batch is not None:
            self.batch.begin_round(participants)

    def participant_done(self) -> None:
        """One participant of the current round will make no more calls."""
        if self.batch is not None:
            self.batch.participant_done()

    # -- calls

    def _budget_left(self) -> bool:
        budget = self.params.budget_usd
        return budget is None or self.stats.cost_usd < budget

    def _tally(self, record: dict[str, Any], cached: bool) -> ChatResult:
        usage = record.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        cost = price_of(self.params.prices_per_1m_tokens, record["model"], prompt, completion)
        cost = cost or 0.0
        if record.get("batch"):  # answered by a batch job: the batch price
            cost *= 1 - self.params.batch_discount
        self.stats.prompt_tokens += prompt
        self.stats.completion_tokens += completion
        self.stats.cost_usd += cost
        if record.get("latency_s") is not None:
            self.stats.latencies.append(float(record["latency_s"]))
        if cached:
            self.stats.from_cache += 1
        else:
            self.stats.answered += 1
            self.stats.new_prompt_tokens += prompt
            self.stats.new_completion_tokens += completion
            self.stats.new_cost_usd += cost
        return ChatResult(
            key=record["key"],
            role=record["role"],
            ok=True,
            text=record["text"],
            cached=cached,
            attempts=int(record.get("attempts") or 0),
            latency_s=record.get("latency_s"),
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost,
            finish_reason=record.get("finish_reason"),
            model=record["model"],
        )

    async def chat(
        self,
        role: str,
        messages: list[dict[str, Any]],
        template_version: str = "",
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        """One chat completion: from the cache, or from the endpoint with bounded retries.
        Never raises for endpoint trouble: a failure comes back with `ok=False` and a reason."""
        endpoint = self.endpoints[role]
        settings = self.settings_for(role, json_schema)
        key = cache_key(endpoint.cfg.model, messages, settings, template_version)
        record = self.cache.get(key)
        if record is not None:
            return self._tally(record, cached=True)
        if self.batch is not None:  # parked until the round's calls go out as one job
            return await self.batch.chat(endpoint, key, messages, settings)
        if key in self._inflight:  # the same request twice in one run: one call
            result = await asyncio.shield(self._inflight[key])
            if result.ok:
                self.stats.from_cache += 1
                return ChatResult(**{**result.__dict__, "cached": True})
            return result
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._call(endpoint, key, messages, settings)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            self._inflight.pop(key, None)

    def _backoff(self, attempt: int) -> float:
        base = self.params.backoff_base_s * (2**attempt)
        return min(self.params.backoff_max_s, base) * self._jitter.uniform(0.5, 1.5)

    async def _call(
        self, endpoint: _Endpoint, key: str, messages: list[dict[str, Any]], settings: dict
    ) -> ChatResult:
        import openai

        attempts = 0
        reason = "not attempted"
        for attempt in range(self.params.max_retries + 1):
            wait: float | None = None
            retry = True
            async with self.semaphore:
                if not self._budget_left():  # checked once a slot is ours: nothing queued slips by
                    self.stats.budget_stopped += 1
                    self.stats.failures["budget_exhausted"] += 1
                    self.stats.failed += 1
                    return ChatResult(
                        key, endpoint.role, False, error="budget_exhausted", attempts=attempts
                    )
                attempts += 1
                self.stats.requests += 1
                started = time.perf_counter()
                try:
                    client = await self._client(endpoint)
                    kwargs = {k: v for k, v in settings.items() if v is not None}
                    response = await client.chat.completions.create(
                        model=endpoint.cfg.model, messages=messages, **kwargs
                    )
                    text, finish, usage = _unpack(response)
                    latency = time.perf_counter() - started
                    record = {
                        "key": key,
                        "role": endpoint.role,
                        "model": endpoint.cfg.model,
                        "text": text,
                        "finish_reason": finish,
                        "usage": usage,
                        "latency_s": round(latency, 4),
                        "attempts": attempts,
                        "created": time.time(),
                    }
                    # on disk before anyone uses it; fsync in a thread keeps the loop serving
                    await asyncio.to_thread(self.cache.put, record)
                    return self._tally(record, cached=False)
                except openai.RateLimitError as exc:
                    reason = "http_429"
                    wait = retry_after_seconds(getattr(exc.response, "headers", None))
                except openai.APITimeoutError:
                    reason = "timeout"
                except openai.APIConnectionError as exc:
                    reason = f"connection: {type(exc.__cause__ or exc).__name__}"
                    await self._revive(endpoint)
                except openai.APIStatusError as exc:
                    status = exc.status_code
                    reason = f"http_{status}"
                    if status in (400, 422) and "response_format" in settings:
                        # JSON mode not understood here: fall back to plain text, once
                        self.stats.notes.append(
                            f"{endpoint.role}: endpoint refused response_format "
                            f"({status}); JSON mode off, tolerant parsing only"
                        )
                        endpoint.json_mode = "off"
                        settings = {k: v for k, v in settings.items() if k != "response_format"}
                    elif not (status >= 500 or status in (408, 409)):
                        retry = False  # 400/401/403/404: asking again will not help
                except (MalformedResponse, openai.APIResponseValidationError, ValueError) as exc:
                    reason = f"malformed: {str(exc)[:80]}"
            self.stats.errors[reason.split(":")[0]] += 1
            if not retry or attempt == self.params.max_retries:
                break
            self.stats.retries += 1
            delay = self._backoff(attempt) if wait is None else min(wait, self.params.backoff_max_s)
            await asyncio.sleep(delay)
        self.stats.failed += 1
        self.stats.failures[reason.split(":")[0]] += 1
        return ChatResult(key, endpoint.role, False, error=reason, attempts=attempts)


def _unpack(response: Any) -> tuple[str, str | None, dict[str, int | None]]:
    """(text, finish_reason, usage) of a chat completion, or MalformedResponse."""
    if isinstance(response, (str, bytes)):  # non-JSON body handed back as text
        raise MalformedResponse("body is not JSON")
    choices = getattr(response, "choices", None)
    if not choices:
        raise MalformedResponse("no choices")
    message = getattr(choices[0], "message", None)
    text = getattr(message, "content", None)
    if not isinstance(text, str):
        raise MalformedResponse("no message content")
    usage = getattr(response, "usage", None)
    usage_dict = {
        "prompt_tokens": getattr(usage, "prompt_tokens", None),
        "completion_tokens": getattr(usage, "completion_tokens", None),
    }
    return text, getattr(choices[0], "finish_reason", None), usage_dict


def run_sync(make_coro: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine from sync code, also inside a running loop (Jupyter) via a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make_coro())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def chat_many(
    session: LLMSession,
    role: str,
    requests: Iterable[list[dict[str, Any]]],
    template_version: str = "",
    json_schema: dict[str, Any] | None = None,
    progress: Callable[[ChatResult], None] | None = None,
) -> list[ChatResult]:
    """Many chats concurrently (bounded by the session's limit), results in input order; one
    round (in batch mode: one job)."""

    async def one(messages: list[dict[str, Any]]) -> ChatResult:
        try:
            result = await session.chat(role, messages, template_version, json_schema)
        finally:
            session.participant_done()
        if progress is not None:
            progress(result)
        return result

    requests = list(requests)
    session.begin_round(len(requests))
    return list(await asyncio.gather(*(one(m) for m in requests)))
