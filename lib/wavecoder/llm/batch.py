"""Batch submission for `llm.mode: batch`: a round's cache misses go out as one batch job per
endpoint, through the OpenAI Batch API (files + batches) or a local command (vLLM's offline
`run_batch`), and come back into the same response cache interactive mode writes.

How a round becomes a job: `LLMSession.begin_round(n)` says n participants (item coroutines)
will make calls. A cache miss parks its request here and blocks its participant; once every
still-active participant is blocked on a parked or submitted request, the parked requests are
flushed: grouped by endpoint (base URL, key, model) and sent as one job each. Stage 02's round
therefore sends its generator calls as one job, then its judge calls as another.

What it guarantees:
- the batch id (or, for a command, the job) is written to a state file under the batch folder
  before polling starts, named by a hash of the job's custom ids (the cache keys); a rerun
  after a kill finds the open job covering its requests and resumes it: no new upload, no new
  batch, nothing paid twice;
- expired or failed lines (per-line errors, non-200 answers, a whole batch failed or
  cancelled) go out again, only those, up to `llm.batch.max_resubmits` times; then they come
  back as failed results (`batch_<reason>`). A line folded into the cache is never sent again;
- a job is not submitted once `llm.budget_usd` is spent: its lines fail `budget_exhausted`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wavecoder.llm.session import ChatResult, LLMSession, _Endpoint

BATCH_ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
STATE_SUFFIX = ".json"
DONE_DIR = "done"


class JobError(Exception):
    """A job could not be submitted or followed. `resubmit` False: it may still be running
    (its state stays open for a rerun to resume), so its lines must not go out again now."""

    def __init__(self, reason: str, resubmit: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.resubmit = resubmit


@dataclass
class Line:
    key: str  # the cache key, sent as custom_id
    endpoint: _Endpoint
    body: dict[str, Any]  # exactly what interactive mode would send
    future: asyncio.Future
    submissions: int = 0


@dataclass
class Outcome:
    """One custom_id's answer in a job's output: a cache record or a failure reason."""

    record: dict[str, Any] | None = None
    reason: str | None = None


@dataclass
class Job:
    """A submitted (or resumable) job and its state file."""

    name: str
    state: dict[str, Any]
    path: Path
    lines: dict[str, str] = field(default_factory=dict)  # custom_id -> role


def request_set_name(custom_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(custom_ids)).encode()).hexdigest()[:24]


def write_json_atomic(path: Path, data: dict[str, Any], fsync: bool = True) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, sort_keys=True, indent=1)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def request_lines(lines: list[Line]) -> bytes:
    """The batch input file: one POST /v1/chat/completions per line, custom_id = cache key."""
    rows = [
        {"custom_id": line.key, "method": "POST", "url": BATCH_ENDPOINT, "body": line.body}
        for line in lines
    ]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def parse_output_line(row: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, str]:
    """(custom_id, chat completion body or None, failure reason) of one line of the OpenAI
    batch output format `{"id", "custom_id", "response": {"status_code", "body"}, "error"}`."""
    cid = row.get("custom_id")
    error = row.get("error")
    if error:
        code = (error.get("code") if isinstance(error, dict) else None) or "error"
        return cid, None, str(code).removeprefix("batch_")
    response = row.get("response") or {}
    status = response.get("status_code")
    if status != 200:
        return cid, None, f"http_{status}"
    body = response.get("body")
    try:
        choice = body["choices"][0]
        if not isinstance(choice["message"]["content"], str):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        return cid, None, "malformed"
    return cid, body, ""


def read_output(data: bytes) -> dict[str, tuple[dict[str, Any] | None, str]]:
    """custom_id -> (body, reason) over a whole output or error file; torn lines skipped."""
    out: dict[str, tuple[dict[str, Any] | None, str]] = {}
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            cid, body, reason = parse_output_line(json.loads(raw))
        except (json.JSONDecodeError, AttributeError, TypeError):
            continue
        if cid is not None and (cid not in out or body is not None):
            out[cid] = (body, reason)
    return out


def cache_record(
    key: str, role: str, model: str, body: dict[str, Any], batch_id: str, submissions: int
) -> dict[str, Any]:
    """A cache record of the shape interactive mode writes, marked as batch-answered. `model`
    is the params' model name (prices are looked up by it), not the dated one answering."""
    choice = body["choices"][0]
    usage = body.get("usage") or {}
    return {
        "key": key,
        "role": role,
        "model": model,
        "text": choice["message"]["content"],
        "finish_reason": choice.get("finish_reason"),
        "usage": {
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
        },
        "latency_s": None,
        "attempts": max(1, submissions),
        "created": time.time(),
        "batch_id": batch_id,
        "batch": True,
    }


class BatchCoordinator:
    """Parks a session's cache misses and sends them as batch jobs (see the module doc)."""

    def __init__(self, session: LLMSession, folder: Path, progress: bool = True) -> None:
        self.session = session
        self.params = session.params.batch
        self.folder = Path(folder)
        self.progress = progress
        self.active = 0  # participants of the current round(s) still making calls
        self.blocked = 0  # participants waiting on a parked or submitted request
        self.waiters: Counter = Counter()  # key -> participants waiting on it
        self.futures: dict[str, asyncio.Future] = {}
        self.pending: dict[str, Line] = {}
        self.tasks: set[asyncio.Task] = set()
        self._open: dict[str, Job] | None = None  # open jobs found on disk, by name
        self._seen_ids: set[str] = set()  # batches this process created or followed

    # -- rounds and calls

    def begin_round(self, participants: int) -> None:
        self.active += max(0, participants)

    def participant_done(self) -> None:
        self.active = max(0, self.active - 1)
        self.maybe_flush()

    async def chat(
        self, endpoint: _Endpoint, key: str, messages: list[dict[str, Any]], settings: dict
    ) -> ChatResult:
        from wavecoder.llm.session import ChatResult

        implicit = self.active <= 0  # a call outside any round is a round of its own
        if implicit:
            self.active += 1
        try:
            future = self.futures.get(key)
            primary = future is None
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self.futures[key] = future
                body = {
                    "model": endpoint.cfg.model,
                    "messages": messages,
                    **{k: v for k, v in settings.items() if v is not None},
                }
                self.pending[key] = Line(key, endpoint, body, future)
            self.waiters[key] += 1
            self.blocked += 1
            self.maybe_flush()
            try:
                result = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.done():  # still counted as waiting: count it out
                    self.waiters[key] -= 1
                    self.blocked -= 1
                raise
        finally:
            if implicit:
                self.active = max(0, self.active - 1)
                self.maybe_flush()
        if primary:
            return result
        if result.ok:  # the same request twice in one round: one line
            self.session.stats.from_cache += 1
            return ChatResult(**{**result.__dict__, "cached": True})
        return result

    def maybe_flush(self) -> None:
        """Flush when every active participant waits on a request and some are parked."""
        if not self.pending or self.blocked < self.active:
            return
        lines = list(self.pending.values())
        self.pending.clear()
        task = asyncio.get_running_loop().create_task(self._flush(lines))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _resolve(self, key: str, result: ChatResult) -> None:
        future = self.futures.pop(key, None)
        self.blocked -= self.waiters.pop(key, 0)
        if future is not None and not future.done():
            future.set_result(result)

    def _fail(self, line: Line, error: str) -> None:
        from wavecoder.llm.session import ChatResult

        stats = self.session.stats
        stats.failed += 1
        stats.failures[error.split(":")[0]] += 1
        if error == "budget_exhausted":
            stats.budget_stopped += 1
        else:
            stats.batch_lines_failed += 1
        self._resolve(
            line.key,
            ChatResult(line.key, line.endpoint.role, False, error=error, attempts=line.submissions),
        )

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            try:
                await task
            except BaseException:  # closing must not mask the run's own error
                pass

    # -- flushing

    def _group(self, endpoint: _Endpoint) -> tuple[str, ...]:
        cfg = endpoint.cfg
        if self.params.runner == "command":
            return ("command", cfg.model)
        return ("openai", cfg.base_url or "", endpoint.api_key, cfg.model)

    @staticmethod
    def _group_label(group: tuple[str, ...]) -> str:
        if group[0] == "command":
            return f"command {group[1]}"
        return f"{group[1] or 'api.openai.com'} {group[3]}"

    async def _flush(self, lines: list[Line]) -> None:
        groups: dict[tuple[str, ...], list[Line]] = defaultdict(list)
        for line in lines:
            groups[self._group(line.endpoint)].append(line)
        try:
            await asyncio.gather(*(self._run_group(g, ls) for g, ls in groups.items()))
        except BaseException as exc:  # cancelled or interrupted: the waiters hear of it
            for line in lines:
                future = self.futures.pop(line.key, None)
                self.blocked -= self.waiters.pop(line.key, 0)
                if future is None or future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # mark retrieved
            raise

    async def _run_group(self, group: tuple[str, ...], lines: list[Line]) -> None:
        session = self.session
        remaining = {line.key: line for line in lines}
        label = self._group_label(group)
        while remaining:
            for key in [k for k in remaining if k in session.cache]:  # folded meanwhile
                self._resolve(key, session._tally(session.cache.get(key), cached=False))
                remaining.pop(key)
            if not remaining:
                break
            job = self._claim_open(label, set(remaining))
            keys = list(remaining)
            try:
                if job is not None:  # paid already: collect it, whatever the budget
                    session.stats.batches_resumed += 1
                    keys = [k for k in job.lines if k in remaining]
                    for key in keys:
                        remaining[key].submissions += 1
                elif not session._budget_left():
                    for line in remaining.values():
                        self._fail(line, "budget_exhausted")
                    return
                else:
                    job = await self._submit(group, label, list(remaining.values()))
                outcomes = await self._follow(job, group, remaining)
            except JobError as exc:
                if job is not None and not exc.resubmit:
                    # it may still finish: left open for a rerun, nothing goes out again now
                    for key in keys:
                        self._fail(remaining.pop(key), f"batch_{exc.reason}")
                    continue
                outcomes = {k: Outcome(reason=exc.reason) for k in keys}
            except Exception as exc:  # a bug must not hang the round: its lines fail
                session.stats.notes.append(f"batch {label}: {type(exc).__name__}: {exc}"[:300])
                for line in remaining.values():
                    self._fail(line, f"batch_error_{type(exc).__name__}")
                return
            await self._settle(keys, outcomes, remaining)
            if job is not None:
                self._close(job)

    async def _settle(
        self, keys: list[str], outcomes: dict[str, Outcome], remaining: dict[str, Line]
    ) -> None:
        """Answers into the cache (once), then results to their waiters; the job's failed
        lines stay in `remaining` to go out again, or fail for good past max_resubmits."""
        session = self.session
        fresh = [o.record for k, o in outcomes.items() if o.record and k not in session.cache]
        if fresh:
            await asyncio.to_thread(session.cache.put_many, fresh)
        for key in keys:
            line = remaining[key]
            record = session.cache.get(key)
            if record is not None:
                self._resolve(key, session._tally(record, cached=False))
                remaining.pop(key)
                continue
            outcome = outcomes.get(key) or Outcome(reason="missing")
            reason = outcome.reason or "missing"
            if line.submissions > self.params.max_resubmits:
                self._fail(remaining.pop(key), f"batch_{reason}")
                continue
            if reason in ("http_400", "http_422") and "response_format" in line.body:
                # JSON mode not understood here: plain text, as interactive mode falls back
                session.stats.notes.append(
                    f"{line.endpoint.role}: batch refused response_format ({reason}); JSON "
                    f"mode off, tolerant parsing only"
                )
                line.endpoint.json_mode = "off"
                line.body = {k: v for k, v in line.body.items() if k != "response_format"}
            session.stats.batch_lines_resubmitted += 1

    # -- job state on disk

    def _load_open(self) -> dict[str, Job]:
        """Open jobs of earlier runs: state files at the folder's top level."""
        if self._open is None:
            self._open = {}
            for path in sorted(self.folder.glob("*" + STATE_SUFFIX)):
                try:
                    state = json.loads(path.read_text())
                    lines = {cid: role for cid, role in state["lines"]}
                except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
                job = Job(path.name[: -len(STATE_SUFFIX)], state, path, lines)
                if state.get("folded") or all(k in self.session.cache for k in lines):
                    self._close(job)  # nothing left to collect
                    continue
                self._open[job.name] = job
        return self._open

    def _claim_open(self, label: str, keys: set[str]) -> Job | None:
        """An open job of this endpoint holding any of `keys` (taken: one follower only)."""
        jobs = self._load_open()
        for name, job in list(jobs.items()):
            if job.state.get("group") == label and keys & job.lines.keys():
                if job.state.get("runner", "openai") != self.params.runner:
                    continue
                return jobs.pop(name)
        return None

    def _save(self, job: Job) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(job.path, job.state, self.session.params.fsync)

    def _files(self, name: str) -> dict[str, Path]:
        return {
            "input": self.folder / f"{name}.input.jsonl",
            "output": self.folder / f"{name}.output.jsonl",
            "errors": self.folder / f"{name}.errors.jsonl",
            "log": self.folder / f"{name}.log",
        }

    def _close(self, job: Job) -> None:
        """Mark the job collected and move its files under done/ (a later job of the same
        request set, e.g. a resubmission of every line, starts clean)."""
        job.state["folded"] = True
        job.state["closed"] = time.time()
        if job.path.exists():
            self._save(job)
        done = self.folder / DONE_DIR
        done.mkdir(parents=True, exist_ok=True)
        tag = str(job.state.get("batch_id") or int(time.time()))
        for path in [*self._files(job.name).values(), job.path]:
            if path.exists():
                os.replace(path, done / f"{job.name}-{tag}{path.name[len(job.name) :]}")

    # -- submitting and following

    async def _submit(self, group: tuple[str, ...], label: str, lines: list[Line]) -> Job:
        session = self.session
        name = request_set_name([line.key for line in lines])
        files = self._files(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = request_lines(lines)
        write_bytes_atomic(files["input"], payload)
        for line in lines:
            line.submissions += 1
        session.stats.requests += len(lines)
        state: dict[str, Any] = {
            "runner": self.params.runner,
            "group": label,
            "model": group[-1],
            "endpoint": BATCH_ENDPOINT,
            "created": time.time(),
            "lines": [[line.key, line.endpoint.role] for line in lines],
            "input_file": files["input"].name,
            "folded": False,
        }
        job = Job(name, state, self.folder / f"{name}{STATE_SUFFIX}")
        job.lines = {line.key: line.endpoint.role for line in lines}
        if self.params.runner == "command":
            state.update(batch_id=f"command-{name}", status="submitted")
        else:
            client = await session._client(lines[0].endpoint)
            orphan = await self._orphan(client, name)
            if orphan is not None:  # created, then killed before its state file was written
                state.update(
                    batch_id=orphan.id, input_file_id=orphan.input_file_id, status=orphan.status
                )
                self._save(job)
                session.stats.batches_resumed += 1
                return job
            upload = await self._api(
                "upload",
                lambda: client.files.create(
                    file=(files["input"].name, payload, "application/jsonl"),
                    purpose="batch",
                    timeout=max(session.params.timeout_s, 600.0),
                ),
            )
            batch = await self._api(
                "create",
                lambda: client.batches.create(
                    input_file_id=upload.id,
                    endpoint=BATCH_ENDPOINT,
                    completion_window=self.params.completion_window,
                    metadata={"wavecoder_request_set": name},
                ),
            )
            state.update(batch_id=batch.id, input_file_id=upload.id, status=batch.status)
            self._seen_ids.add(batch.id)
        self._save(job)  # before polling: a rerun after a kill resumes this very job
        session.stats.batches_submitted += 1
        return job

    async def _orphan(self, client, name: str):
        """A live batch of this very request set that no state file knows (the process died
        between creating it and saving its id): found by the metadata tag it was created with,
        among the account's recent batches. None when there is none, or listing fails."""
        try:
            page = await client.batches.list(limit=100)
        except Exception:  # listing is a safeguard, not a requirement
            return None
        done = self.folder / DONE_DIR
        for batch in page.data:
            tag = (getattr(batch, "metadata", None) or {}).get("wavecoder_request_set")
            if tag != name or batch.id in self._seen_ids:
                continue
            if done.exists() and any(done.glob(f"{name}-{batch.id}*")):
                continue  # collected already (a resubmission reuses the same request set)
            if batch.status in (
                "validating",
                "in_progress",
                "finalizing",
                "completed",
            ):
                return batch
        return None

    async def _follow(
        self, job: Job, group: tuple[str, ...], remaining: dict[str, Line]
    ) -> dict[str, Outcome]:
        if self.params.runner == "command":
            data, errors, status = await self._run_command(job, group), b"", "completed"
        else:
            data, errors, status = await self._poll(job, remaining)
        outputs = read_output(data)
        for cid, hit in read_output(errors).items():
            outputs.setdefault(cid, hit)
        outcomes: dict[str, Outcome] = {}
        batch_id = str(job.state.get("batch_id"))
        model = str(job.state.get("model") or group[-1])
        for cid, role in job.lines.items():
            body, reason = outputs.get(cid, (None, status if status != "completed" else "missing"))
            if body is None:
                outcomes[cid] = Outcome(reason=reason)
                continue
            line = remaining.get(cid)
            submissions = line.submissions if line is not None else 1
            record = cache_record(cid, role, model, body, batch_id, submissions)
            outcomes[cid] = Outcome(record=record)
        return outcomes

    async def _api(self, what: str, call, resubmit: bool = True):
        """One Batch/Files API call with the session's bounded retries on transient errors."""
        import openai

        session = self.session
        for attempt in range(session.params.max_retries + 1):
            try:
                return await call()
            except openai.RateLimitError:
                reason = "http_429"
            except openai.APITimeoutError:
                reason = "timeout"
            except openai.APIConnectionError:
                reason = "connection"
            except openai.APIStatusError as exc:
                reason = f"http_{exc.status_code}"
                if not (exc.status_code >= 500 or exc.status_code in (408, 409)):
                    raise JobError(f"{what}_{reason}", resubmit) from None
            session.stats.errors[f"batch_{what}_{reason}"] += 1
            if attempt < session.params.max_retries:
                session.stats.retries += 1
                await asyncio.sleep(session._backoff(attempt))
        raise JobError(f"{what}_{reason}", resubmit)

    async def _poll(self, job: Job, remaining: dict[str, Line]) -> tuple[bytes, bytes, str]:
        """Poll until the batch ends; (output file, error file, final status)."""
        from tqdm.auto import tqdm

        session = self.session
        endpoint = next(
            (line.endpoint for k, line in remaining.items() if k in job.lines),
            next(iter(remaining.values())).endpoint,
        )
        client = await session._client(endpoint)
        batch_id = job.state["batch_id"]
        self._seen_ids.add(batch_id)
        bar = tqdm(
            total=len(job.lines),
            desc=f"batch {batch_id} ({job.state.get('model')})",
            unit="line",
            disable=not self.progress,
        )
        try:
            batch = await self._api(
                "poll", lambda: client.batches.retrieve(batch_id), resubmit=False
            )
            while True:
                if batch.status != job.state.get("status"):
                    job.state["status"] = batch.status
                    job.state[f"{batch.status}_at"] = time.time()
                    self._save(job)
                counts = getattr(batch, "request_counts", None)
                if counts is not None:
                    bar.total = counts.total or bar.total
                    bar.n = (counts.completed or 0) + (counts.failed or 0)
                    bar.set_postfix(status=batch.status, failed=counts.failed or 0)
                    bar.refresh()
                if batch.status in TERMINAL:
                    break
                await asyncio.sleep(self.params.poll_interval_s)
                batch = await self._api(
                    "poll", lambda: client.batches.retrieve(batch_id), resubmit=False
                )
        finally:
            bar.close()
        files = self._files(job.name)
        job.state.update(output_file_id=batch.output_file_id, error_file_id=batch.error_file_id)
        contents = []
        for file_id, path in (
            (batch.output_file_id, files["output"]),
            (batch.error_file_id, files["errors"]),
        ):
            data = b""
            if file_id:
                response = await self._api(
                    "download",
                    lambda fid=file_id: client.files.content(
                        fid, timeout=max(session.params.timeout_s, 600.0)
                    ),
                    resubmit=False,
                )
                data = response.content
                write_bytes_atomic(path, data)
            contents.append(data)
        return contents[0], contents[1], batch.status

    async def _run_command(self, job: Job, group: tuple[str, ...]) -> bytes:
        """Run the configured command on the job's input, unless an output that answers every
        line is already there (a rerun after a kill): the OpenAI batch output format."""
        files = self._files(job.name)
        if files["output"].exists():
            data = files["output"].read_bytes()
            if set(read_output(data)) >= job.lines.keys():
                return data
        argv = [
            part.replace("{input}", str(files["input"]))
            .replace("{output}", str(files["output"]))
            .replace("{model}", group[-1])
            for part in self.params.command
        ]
        if argv and argv[0] == "python":  # this interpreter, where vLLM is installed with us
            argv[0] = sys.executable
        job.state["command"] = argv
        job.state["status"] = "running"
        self._save(job)
        with open(files["log"], "ab") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
                )
            except OSError as exc:
                raise JobError(f"command_{type(exc).__name__}") from None
            try:
                code = await proc.wait()
            except BaseException:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                raise
        job.state["returncode"] = code
        job.state["status"] = "completed" if code == 0 else "failed"
        self._save(job)
        if code != 0:
            raise JobError(f"command_exit_{code}")
        return files["output"].read_bytes() if files["output"].exists() else b""
