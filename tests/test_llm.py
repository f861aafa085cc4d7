"""The LLM layer: keys, cache, retries and faults against a fake server, budget, embedded server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wavecoder as wc
from wavecoder import llm

from .conftest import PROJECT
from .fake_openai_server import FakeOpenAI


def params_for(url: str, **overrides):
    base = {
        "llm.generator.backend": "openai",
        "llm.generator.base_url": url,
        "llm.generator.model": "fake-gen",
        "llm.discriminator.backend": "openai",
        "llm.discriminator.base_url": url,
        "llm.discriminator.model": "fake-judge",
        "llm.timeout_s": 1.0,
        "llm.max_retries": 2,
        "llm.backoff_base_s": 0.01,
        "llm.backoff_max_s": 2.0,
        "llm.fsync": False,
    }
    return wc.load_params(PROJECT / "params" / "smoke.yaml", {**base, **overrides})


def ask(params, cache, prompts, role="generator"):
    async def go():
        async with llm.LLMSession.for_generation(params.llm, cache) as session:
            results = await llm.chat_many(
                session, role, [[{"role": "user", "content": p}] for p in prompts]
            )
            return results, session.stats

    return asyncio.run(go())


# ---------------------------------------------------------------- keys


def test_missing_key_for_remote_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("WAVECODER_TEST_KEY", raising=False)
    params = params_for(
        "https://api.example.com/v1", **{"llm.generator.api_key_env": "WAVECODER_TEST_KEY"}
    )
    with pytest.raises(llm.LLMConfigError, match="WAVECODER_TEST_KEY"):
        llm.check_endpoints(params.llm)
    params = params_for("https://api.example.com/v1")  # remote without api_key_env
    with pytest.raises(llm.LLMConfigError, match="api_key_env"):
        llm.check_endpoints(params.llm)


def test_key_comes_from_the_environment_and_is_never_in_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("WAVECODER_TEST_KEY", "sk-secret-value")
    params = params_for(
        "https://api.example.com/v1",
        **{
            "llm.generator.api_key_env": "WAVECODER_TEST_KEY",
            "llm.discriminator.api_key_env": "WAVECODER_TEST_KEY",
        },
    )
    assert llm.resolve_api_key(params.llm.generator, "generator") == "sk-secret-value"
    assert "sk-secret" not in json.dumps(params.model_dump(mode="json"))
    # loopback servers and the embedded backend need no key
    local = params_for("http://127.0.0.1:9/v1")
    llm.check_endpoints(local.llm)
    llm.check_endpoints(wc.load_params(PROJECT / "params" / "default.yaml").llm)


def test_paper_params_need_the_openai_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(llm.LLMConfigError, match="OPENAI_API_KEY"):
        llm.check_endpoints(wc.load_params(PROJECT / "params" / "paper.yaml").llm)


# ---------------------------------------------------------------- cache and helpers


def test_cache_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = llm.ResponseCache(path)
    cache.put({"key": "a", "text": "1"})
    cache.close()
    with open(path, "a") as handle:
        handle.write('{"key": "b", "te')  # killed mid-write
    cache = llm.ResponseCache(path)
    assert "a" in cache and "b" not in cache and cache.torn_lines == 1
    cache.put({"key": "c", "text": "3"})
    cache.close()
    again = llm.ResponseCache(path)
    assert set(again.entries) == {"a", "c"}


def test_cache_key_changes_with_every_part():
    msgs = [{"role": "user", "content": "hi"}]
    base = llm.cache_key("m", msgs, {"temperature": 0.0}, "v1")
    assert base == llm.cache_key("m", [dict(msgs[0])], {"temperature": 0.0}, "v1")
    assert base != llm.cache_key("m2", msgs, {"temperature": 0.0}, "v1")
    assert base != llm.cache_key(
        "m", [{"role": "user", "content": "ho"}], {"temperature": 0.0}, "v1"
    )
    assert base != llm.cache_key("m", msgs, {"temperature": 0.5}, "v1")
    assert base != llm.cache_key("m", msgs, {"temperature": 0.0}, "v2")


def test_retry_after_parsing():
    assert llm.retry_after_seconds({"retry-after": "2"}) == 2.0
    assert llm.retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert llm.retry_after_seconds({"retry-after": "nonsense"}) is None
    assert llm.retry_after_seconds({}) is None


# ---------------------------------------------------------------- faults


def test_transient_faults_are_retried_and_answered(tmp_path):
    faults = ["429:2", "500:1", "slow:1", "drop:1", "malformed:1", "nochoices:1"]
    prompts = [f"item {i} FAULT:generator:{f.replace(':', ':')}" for i, f in enumerate(faults)]
    prompts.append("a clean item")
    with FakeOpenAI(slow_s=2.5, retry_after="0.3") as fake:
        params = params_for(fake.base_url)
        results, stats = ask(params, tmp_path / "c.jsonl", prompts)
        assert all(r.ok for r in results), [r.error for r in results]
        # one extra request per injected fault, two for the 429x2 item
        assert fake.count() == len(prompts) + 7
        assert stats.retries == 7
        assert set(stats.errors) == {"http_429", "http_500", "timeout", "connection", "malformed"}
        # Retry-After honoured: the 429'd item's requests are >= 0.3 s apart
        times = [r["t"] for r in fake.requests if r["key"] == fake.requests[0]["key"]]
        rate_limited = [r for r in fake.requests if r["action"] == "429"]
        same = [r["t"] for r in fake.requests if r["key"] == rate_limited[0]["key"]]
        assert len(same) == 3 and min(b - a for a, b in zip(same, same[1:])) >= 0.28
        assert times


def test_persistent_failures_are_bounded_and_reported(tmp_path):
    prompts = ["always 500 FAULT:generator:500:99", "always slow FAULT:generator:slow:99", "ok"]
    with FakeOpenAI(slow_s=1.5) as fake:
        params = params_for(fake.base_url, **{"llm.max_retries": 2})
        results, stats = ask(params, tmp_path / "c.jsonl", prompts)
        by_prompt = dict(zip(prompts, results))
        assert by_prompt[prompts[0]].error == "http_500" and by_prompt[prompts[0]].attempts == 3
        assert by_prompt[prompts[1]].error == "timeout" and by_prompt[prompts[1]].attempts == 3
        assert by_prompt["ok"].ok
        assert fake.count() == 3 + 3 + 1
        assert stats.failed == 2 and stats.failures == {"http_500": 1, "timeout": 1}
        # failures are not cached: a rerun asks again (and only for them)
        before = fake.count()
        results, stats = ask(params, tmp_path / "c.jsonl", prompts)
        assert fake.count() - before == 6 and stats.from_cache == 1


def test_client_errors_are_not_retried(tmp_path):
    with FakeOpenAI() as fake:
        params = params_for(fake.base_url)
        results, _ = ask(params, tmp_path / "c.jsonl", ["bad FAULT:generator:400:9"])
        assert results[0].error == "http_400" and results[0].attempts == 1
        params.llm.generator.base_url = fake.base_url + "/nothing-here"  # a 404
        results, _ = ask(params, tmp_path / "c2.jsonl", ["x"])
        assert results[0].error == "http_404" and results[0].attempts == 1
        assert fake.count() == 1  # the 404 is not a chat request the fake counts


def test_json_mode_refused_falls_back_to_text(tmp_path):
    with FakeOpenAI() as fake:
        params = params_for(fake.base_url)

        async def go():
            async with llm.LLMSession.for_generation(params.llm, tmp_path / "c.jsonl") as session:
                msgs = [{"role": "user", "content": "j FAULT:generator:nojson:9"}]
                result = await session.chat("generator", msgs, json_schema={"type": "object"})
                return result, session

        result, session = asyncio.run(go())
        assert result.ok and result.attempts == 2
        assert session.endpoints["generator"].json_mode == "off"
        assert any("response_format" in n for n in session.stats.notes)


def test_warm_cache_makes_no_requests_and_duplicates_call_once(tmp_path):
    prompts = [f"p{i}" for i in range(20)] + ["p0", "p1"]  # two duplicates
    with FakeOpenAI(delay_s=0.05) as fake:
        params = params_for(fake.base_url, **{"llm.concurrency": 8})
        first, stats = ask(params, tmp_path / "c.jsonl", prompts)
        assert fake.count() == 20 and all(r.ok for r in first)
        again, stats = ask(params, tmp_path / "c.jsonl", prompts)
        assert fake.count() == 20 and stats.from_cache == len(prompts) and stats.requests == 0
        assert [r.text for r in again] == [r.text for r in first]


def test_budget_cap_stops_new_calls(tmp_path):
    with FakeOpenAI(delay_s=0.02) as fake:
        params = params_for(
            fake.base_url,
            **{
                "llm.concurrency": 1,
                "llm.budget_usd": 0.001,
                "llm.prices_per_1m_tokens": {"fake-gen": [1000.0, 1000.0]},
            },
        )
        results, stats = ask(params, tmp_path / "c.jsonl", [f"item {i}" for i in range(10)])
        answered = [r for r in results if r.ok]
        stopped = [r for r in results if r.error == "budget_exhausted"]
        assert answered and stopped and len(answered) + len(stopped) == 10
        assert fake.count() == len(answered)
        assert stats.cost_usd >= 0.001 and stats.budget_stopped == len(stopped)


def test_usage_and_cost_are_tallied(tmp_path):
    with FakeOpenAI() as fake:
        params = params_for(fake.base_url, **{"llm.prices_per_1m_tokens": {"fake-gen": [2.0, 4.0]}})
        results, stats = ask(params, tmp_path / "c.jsonl", ["a", "b"])
        assert stats.prompt_tokens == sum(r.prompt_tokens for r in results) > 0
        expected = sum(r.prompt_tokens * 2 + r.completion_tokens * 4 for r in results) / 1e6
        assert stats.cost_usd == pytest.approx(expected)


# ---------------------------------------------------------------- named endpoints


def test_a_session_takes_named_endpoints_and_the_name_is_not_in_the_cache_key(tmp_path):
    with FakeOpenAI() as fake:
        params = params_for(fake.base_url)
        # the settings' own discriminator is not used: remote and keyless, it would fail a check
        unused = params.llm.discriminator.model_copy(update={"base_url": "https://x.example/v1"})
        settings = params.llm.model_copy(update={"discriminator": unused})
        endpoint = params.llm.generator
        msgs = [{"role": "user", "content": "named"}]

        async def go():
            async with llm.LLMSession({"solo": endpoint}, settings, tmp_path / "c.jsonl") as s:
                assert list(s.endpoints) == ["solo"]
                return await s.chat("solo", msgs), s.settings_for("solo")

        result, used = asyncio.run(go())
        assert result.ok and result.role == "solo" and fake.count() == 1
        assert result.key == llm.cache_key(endpoint.model, msgs, used, "")
        # the same endpoint as stage 02's generator: the same key, answered from the cache
        results, stats = ask(params, tmp_path / "c.jsonl", ["named"])
        assert results[0].key == result.key and stats.from_cache == 1 and fake.count() == 1
    with pytest.raises(ValueError, match="at least one endpoint"):
        llm.LLMSession({}, params.llm, tmp_path / "c.jsonl")


def test_endpoint_errors_name_their_params_key(monkeypatch, tmp_path):
    from wavecoder.evaluate.completions import OpenAIGenerator

    monkeypatch.delenv("WAVECODER_TEST_KEY", raising=False)
    params = params_for("http://127.0.0.1:9/v1")
    remote = params.llm.generator.model_copy(update={"base_url": "https://api.example.com/v1"})
    with pytest.raises(llm.LLMConfigError, match=r"evaluate\.endpoints\.tuned\.api_key_env"):
        OpenAIGenerator(
            params.llm, remote, tmp_path / "c.jsonl", 64, where="evaluate.endpoints.tuned"
        )
    with pytest.raises(llm.LLMConfigError, match=r"llm\.solo\.api_key_env"):
        llm.check_endpoints(params.llm, endpoints={"solo": remote})


def test_stage04_generator_keeps_one_session_and_its_cache_keys(tmp_path):
    """One session for every `complete` of a model; the cache keys stage 04 has always written
    (endpoint's model, greedy, its token budget, seed 0, no template version), so a rerun,
    also of an earlier version's cache, asks nothing again."""
    from wavecoder.evaluate.completions import OpenAIGenerator

    with FakeOpenAI() as fake:
        params = params_for(fake.base_url)
        endpoint = params.llm.generator.model_copy(update={"model": "bench-model"})
        cache = tmp_path / "llm_cache.jsonl"
        with OpenAIGenerator(params.llm, endpoint, cache, 64) as gen:
            first = gen.complete(["a", "b"], 64, ())
            session = gen._session
            second = gen.complete(["c"], 64, ())
            assert gen._session is session and session.stats.answered == 3
        assert gen._session is None and fake.count() == 3
        keys = {json.loads(line)["key"] for line in cache.read_text().splitlines()}
        settings = {"temperature": 0.0, "max_tokens": 64, "seed": 0}
        msgs = [[{"role": "user", "content": p}] for p in "abc"]
        assert keys == {llm.cache_key("bench-model", m, settings, "") for m in msgs}
        with OpenAIGenerator(params.llm, endpoint, cache, 64) as gen:
            assert gen.complete(["a", "b", "c"], 64, ()) == first + second
        assert fake.count() == 3


# ---------------------------------------------------------------- embedded server


def test_embedded_server_starts_answers_and_always_stops(tmp_path):
    import httpx

    server = llm.EmbeddedServer(llm.default_gguf(), "smol", n_ctx=512, log_path=tmp_path / "s.log")
    with pytest.raises(RuntimeError, match="boom"):
        with server:
            url = server.base_url
            assert httpx.get(url + "/models", timeout=5).json()["data"][0]["id"] == "smol"
            proc = server.proc
            raise RuntimeError("boom")
    assert proc.poll() is not None  # stopped on the error
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/models", timeout=2)


def still_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers until init reaps it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "State:\tZ" not in status


def test_embedded_server_ends_when_its_parent_is_killed(tmp_path):
    """The server lives in its own session (interrupts must not kill it mid-request), so only
    its orphan watchdog can stop it after a SIGKILL of the process that started it."""
    import httpx

    parent_code = (
        "import sys, time; from wavecoder import llm\n"
        "s = llm.EmbeddedServer(llm.default_gguf(), 'smol', n_ctx=512).start()\n"
        "print(s.proc.pid, s.base_url, flush=True); time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        server_pid, url = parent.stdout.readline().split()
        assert httpx.get(url + "/models", timeout=5).status_code == 200
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and still_running(int(server_pid)):
            time.sleep(0.25)
        assert not still_running(int(server_pid))
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + "/models", timeout=2)
    finally:
        parent.kill()
        if "server_pid" in locals():
            try:
                os.kill(int(server_pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_embedded_missing_gguf_is_a_clear_error(tmp_path):
    params = wc.load_params(
        PROJECT / "params" / "smoke.yaml", {"llm.generator.gguf_path": str(tmp_path / "no.gguf")}
    )
    with pytest.raises(llm.LLMConfigError, match="no.gguf"):
        llm.check_endpoints(params.llm)
    started = time.monotonic()
    with pytest.raises(llm.LLMConfigError):
        llm.LLMSession.for_generation(params.llm, tmp_path / "c.jsonl")
    assert time.monotonic() - started < 5
