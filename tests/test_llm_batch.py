"""`llm.mode: batch`: stage 02's rounds as batch jobs against a fake Batch API and a fake vLLM
`run_batch`; kill and resume, expiry and failed lines, budget, config errors."""

from __future__ import annotations

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
from wavecoder.config import ParamsError
from wavecoder.generate import stage as sg

from .conftest import PROJECT
from .fake_batch_server import FakeBatchServer
from .fake_openai_server import FakeOpenAI, body_key
from .test_stage_generate import CHILD, code, fake_overrides, make_run_dir, run_stage

SMOKE = PROJECT / "params" / "smoke.yaml"
PRICES = {"fake-gen": [2.0, 8.0], "fake-judge": [5.0, 15.0]}
# a loaded machine must not turn a slow answer into a failure: both runs must match
PATIENT = {"llm.prices_per_1m_tokens": PRICES, "llm.timeout_s": 30.0}
OUTPUTS = ("codeocean.jsonl", "rejected.jsonl", "alpaca.jsonl")
FAKE_VLLM = [
    sys.executable,
    str(PROJECT / "tests" / "fake_batch_server.py"),
    "-i",
    "{input}",
    "-o",
    "{output}",
    "--model",
    "{model}",
]


def batch_params(url: str, **extra):
    overrides = fake_overrides(
        url,
        **{
            "llm.mode": "batch",
            "llm.batch.poll_interval_s": 0.01,
            **PATIENT,
            **extra,
        },
    )
    return wc.load_params(SMOKE, overrides), overrides


def reference(tmp_path: Path, codes: list[str]):
    """The interactive run on the same answers: (run, out folder, request bodies seen)."""
    with FakeOpenAI() as fake:
        overrides = fake_overrides(fake.base_url, **PATIENT)
        run, out, _ = run_stage(wc.load_params(SMOKE, overrides), make_run_dir(tmp_path, codes))
        bodies = {r["key"] for r in fake.requests}
    return run, out, bodies


def assert_same_outputs(out: Path, ref_out: Path) -> None:
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name


def cache_records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / sg.CACHE_FILE).read_text().splitlines() if x.strip()]


def open_states(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "batches").glob("*.json"))]


def test_stage_in_batch_mode_equals_the_interactive_run(tmp_path):
    codes = [code(i) for i in range(12)]  # 3 rounds of 4
    ref, ref_out, ref_bodies = reference(tmp_path / "ref", codes)
    assert ref.counts()["accepted"] == 12, [r["reason"] for r in ref.records]
    with FakeBatchServer() as fake:
        params, _ = batch_params(fake.base_url)
        run, out, items = run_stage(params, make_run_dir(tmp_path / "batch", codes))
        # each round: its generator calls as one job, then its judge calls as another
        assert fake.created == 6 and fake.by_role == {"generator": 3, "judge": 3}
        assert [len(fake.batches[b]["_requests"]) for b in fake.order] == [4] * 6
        # exactly the bodies interactive mode sends; every line answered (paid) once
        assert fake.bodies == ref_bodies
        assert len(fake.answered) == 24 and set(fake.answered.values()) == {1}
        again, _, _ = run_stage(params, out.parent)  # warm: all from the cache
        assert fake.created == 6 and again.stats["requests"] == 0
    assert_same_outputs(out, ref_out)
    assert [r["status"] for r in run.records] == [r["status"] for r in ref.records]
    stats = run.stats
    assert (stats["batches_submitted"], stats["batches_resumed"]) == (6, 0)
    assert (stats["requests"], stats["answered_new"], stats["failed"]) == (24, 24, 0)
    assert stats["batch_lines_resubmitted"] == stats["batch_lines_failed"] == 0
    # same tokens, batch price: (1 - llm.batch_discount) of the interactive cost
    assert stats["prompt_tokens"] == ref.stats["prompt_tokens"] > 0
    discount = params.llm.batch_discount
    assert stats["cost_usd"] == pytest.approx(ref.stats["cost_usd"] * (1 - discount), rel=1e-4)
    assert again.stats["cost_usd"] == pytest.approx(stats["cost_usd"], rel=1e-4)
    # the cache holds records of interactive mode's shape, marked as batch answers
    records = cache_records(out)
    assert len(records) == 24
    for record in records:
        assert record["batch"] is True and record["batch_id"] in fake.batches
        assert record["latency_s"] is None and record["attempts"] == 1
        assert record["model"] in ("fake-gen", "fake-judge")  # not the dated model answering
        assert {"key", "role", "text", "finish_reason", "usage", "created"} <= set(record)
    # request files: one POST per line, custom_id = cache key; every job closed under done/
    assert not open_states(out)
    inputs = sorted((out / "batches" / "done").glob("*.input.jsonl"))
    assert len(inputs) == 6
    line = json.loads(inputs[0].read_text().splitlines()[0])
    assert set(line) == {"custom_id", "method", "url", "body"}
    assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
    assert body_key(line["body"]) in ref_bodies and line["custom_id"] in {r["key"] for r in records}
    assert sg.summarize(run, params)["llm"]["batches_submitted"] == 6  # in metrics.json


def test_killed_while_polling_resumes_the_same_batch(tmp_path):
    codes = [code(i) for i in range(12)]
    _, ref_out, _ = reference(tmp_path / "ref", codes)
    with FakeBatchServer(hold_from=2) as fake:  # the 3rd job (round 2's generator) waits
        params, overrides = batch_params(fake.base_url, **{"llm.fsync": True})
        run_dir = make_run_dir(tmp_path / "crash", codes)
        out = run_dir / "02_generate"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(SMOKE), json.dumps(overrides), str(run_dir)],
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            states = open_states(out) if (out / "batches").exists() else []
            if fake.created == 3 and states and states[0].get("status") == "in_progress":
                break
            time.sleep(0.02)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        [state] = open_states(out)
        held = fake.order[2]
        # written before polling: the batch, its input file, endpoint, status, created
        assert state["batch_id"] == held and state["input_file_id"]
        assert state["endpoint"] == "/v1/chat/completions" and state["created"] > 0
        assert fake.status_of(2) == "in_progress" and not (out / "codeocean.jsonl").exists()

        fake.release()
        run, out, _ = run_stage(params, run_dir)
        assert fake.created == 6  # no new upload or batch for the held request set
        assert run.stats["batches_resumed"] == 1 and run.stats["batches_submitted"] == 3
        assert set(fake.answered.values()) == {1} and len(fake.answered) == 24
        assert {r["batch_id"] for r in cache_records(out) if r["role"] == "generator"} >= {held}
    assert not open_states(out)
    assert_same_outputs(out, ref_out)
    assert run.counts()["accepted"] == 12


def test_expired_and_failed_lines_go_out_again_and_only_those(tmp_path):
    codes = [code(i, "POISON" if i == 9 else "") for i in range(12)]
    _, ref_out, _ = reference(tmp_path / "ref", codes)
    faults = {
        ("generator", 0): "expire",  # round 1: 2 of 4 answered, 2 expire
        ("generator", 1): "partial",  # their resubmission: the first line fails (500)
        ("generator", 2): "fail_batch",  # then the whole batch fails
        ("judge", 0): "cancel",  # a round's judge batch cancelled half way
    }
    with FakeBatchServer(faults=faults, poison="POISON") as fake:
        params, _ = batch_params(fake.base_url)
        run, out, items = run_stage(params, make_run_dir(tmp_path / "faults", codes))
        # never paid twice; what was resubmitted had not been answered
        assert set(fake.answered.values()) == {1}
        assert len(fake.answered) == 2 * 12 - 2  # the poisoned item: no line answered, no judge
        generator_jobs = [
            len(fake.batches[b]["_requests"])
            for b in fake.order
            if fake.batches[b]["_role"][0] == "generator"
        ]
        # round 1: 4, then the 2 expired, the 1 failed line, the failed batch's 1 line again;
        # rounds 2 and 3: 4 each, then the poisoned line 3 more times (max_resubmits 3)
        assert generator_jobs == [4, 2, 1, 1, 4, 4, 1, 1, 1]
        poisoned = [k for k, n in fake.submitted.items() if n == 4 and k not in fake.answered]
        assert len(poisoned) == 1
    by_row = {r["row_id"]: r for r in run.records}
    assert len(run.records) == len(items) == 12
    assert by_row[109]["status"] == "failed"
    assert by_row[109]["reason"] == "generator_failed:batch_http_500"
    assert all(r["status"] == "accepted" for r in run.records if r["row_id"] != 109)
    stats = run.stats
    assert stats["batch_lines_failed"] == 1 and stats["failures"] == {"batch_http_500": 1}
    # generator: 2 expired, 1 failed line, 1 line of the failed batch, the poisoned line 3
    # times; judge: round 1's first judge job held the 2 items answered before the expiry
    # (their judge calls did not wait for the resubmissions), 1 of them was cancelled
    assert stats["batch_lines_resubmitted"] == 2 + 1 + 1 + 3 + 1
    # resubmitted lines record how often they went out
    attempts = {r["key"]: r["attempts"] for r in cache_records(out)}
    assert sorted(attempts.values()).count(4) == 1  # the line of the failed batch
    # the accepted cases are the interactive run's, less the poisoned item's
    reference_rows = [json.loads(x) for x in (ref_out / "codeocean.jsonl").read_text().splitlines()]
    expected = [r for r in reference_rows if r["raw_code_id"] != 109]
    got = [json.loads(x) for x in (out / "codeocean.jsonl").read_text().splitlines()]
    assert got == expected


def test_budget_stops_new_jobs(tmp_path):
    with FakeBatchServer() as fake:
        params, _ = batch_params(fake.base_url, **{"llm.budget_usd": 1e-9})
        run, _, items = run_stage(params, make_run_dir(tmp_path, [code(i) for i in range(8)]))
        assert fake.created == 1  # round 1's generator job, then the budget is spent
    reasons = [r["reason"] for r in run.records]
    assert (
        reasons == ["judge_failed:budget_exhausted"] * 4 + ["generator_failed:budget_exhausted"] * 4
    )
    assert run.stats["budget_stopped"] == 8 and run.stats["batches_submitted"] == 1


def test_command_runner_reads_vllm_batch_output_and_reuses_it_after_a_kill(tmp_path, monkeypatch):
    codes = [code(i) for i in range(12)]
    _, ref_out, _ = reference(tmp_path / "ref", codes)
    counter = tmp_path / "runs.txt"
    extra = {
        "llm.batch.runner": "command",
        "llm.batch.command": FAKE_VLLM,
        # offline: no endpoint is called, so a remote URL needs no key
        "llm.generator.base_url": None,
        "llm.discriminator.base_url": None,
    }
    params, overrides = batch_params("http://unused.invalid/v1", **extra)
    llm.check_endpoints(params.llm)  # no api_key_env needed
    # one clean run
    monkeypatch.setenv("FAKE_VLLM_COUNTER", str(counter))
    run, out, _ = run_stage(params, make_run_dir(tmp_path / "clean", codes))
    assert len(counter.read_text().splitlines()) == 6 and run.stats["batches_submitted"] == 6
    assert_same_outputs(out, ref_out)
    assert {r["batch_id"][:8] for r in cache_records(out)} == {"command-"}
    # the 3rd run of the command writes its output, then the stage is killed before reading it
    counter.unlink()
    run_dir = make_run_dir(tmp_path / "crash", codes)
    env = {**os.environ, "FAKE_VLLM_KILL_PARENT_AT": "3"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(SMOKE), json.dumps(overrides), str(run_dir)],
        env=env,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL
    assert len(counter.read_text().splitlines()) == 3
    [state] = open_states(run_dir / "02_generate")
    assert state["status"] == "running" and state["runner"] == "command"
    resumed, out, _ = run_stage(params, run_dir)
    # the killed job's output was read, not made again: 6 jobs, 6 runs of the command
    assert len(counter.read_text().splitlines()) == 6
    assert resumed.stats["batches_resumed"] == 1 and resumed.stats["batches_submitted"] == 3
    assert_same_outputs(out, ref_out)


def test_embedded_backend_in_batch_mode_is_a_config_error():
    with pytest.raises(ParamsError, match=r"llm\.generator\.backend 'embedded'") as err:
        wc.load_params(SMOKE, {"llm.mode": "batch"})
    assert "llm.mode" in str(err.value)
    with pytest.raises(ParamsError, match=r"llm\.discriminator\.backend 'embedded'"):
        wc.load_params(
            SMOKE,
            {
                "llm.mode": "batch",
                "llm.generator.backend": "openai",
                "llm.generator.base_url": "http://127.0.0.1:1/v1",
            },
        )
    with pytest.raises(ParamsError, match=r"llm\.batch\.runnr"):
        wc.load_params(SMOKE, {"llm.batch.runnr": "command"})
    # built without validation (model_copy): the session's own check names the key too
    params = wc.load_params(SMOKE)
    unchecked = params.llm.model_copy(update={"mode": "batch"})
    with pytest.raises(llm.LLMConfigError, match=r"llm\.generator\.backend 'embedded'"):
        llm.check_endpoints(unchecked)


def test_a_request_twice_in_a_round_is_one_line_and_a_call_outside_rounds_works(tmp_path):
    import asyncio

    with FakeBatchServer() as fake:
        params, _ = batch_params(fake.base_url)
        prompts = ["Task type: Code Generation\nnow", "Task type: Code Summarization\nnow"]

        async def go():
            async with llm.LLMSession.for_generation(
                params.llm, tmp_path / "c.jsonl", progress=False
            ) as s:
                messages = [[{"role": "user", "content": p}] for p in prompts + prompts[:1]]
                many = await llm.chat_many(s, "generator", messages)
                alone = await s.chat("generator", [{"role": "user", "content": "alone"}])
                return many, alone, s.stats

        many, alone, stats = asyncio.run(go())
        assert [len(fake.batches[b]["_requests"]) for b in fake.order] == [2, 1]
    assert all(r.ok for r in many) and alone.ok
    assert many[0].text == many[2].text and many[2].cached and not many[0].cached
    assert (stats.answered, stats.from_cache, stats.batches_submitted) == (3, 1, 2)
    assert (tmp_path / "batches" / "done").is_dir()  # default folder: next to the cache


class Killed(BaseException):
    """Stands for kill -9 at one exact point (a real kill cannot be aimed that finely)."""


def test_a_batch_created_but_not_yet_recorded_is_found_by_its_tag(tmp_path, monkeypatch):
    """Killed after `batches.create` returned and before the state file was written: the
    rerun finds the batch by its metadata tag and follows it; nothing is submitted twice."""
    from wavecoder.llm.batch import BatchCoordinator

    codes = [code(i) for i in range(4)]
    _, ref_out, _ = reference(tmp_path / "ref", codes)
    real_save = BatchCoordinator._save
    fired = []

    def dying_save(self, job):
        if job.state.get("batch_id") and not fired:
            fired.append(job.state["batch_id"])
            raise Killed
        real_save(self, job)

    with FakeBatchServer() as fake:
        params, _ = batch_params(fake.base_url)
        run_dir = make_run_dir(tmp_path / "orphan", codes)
        monkeypatch.setattr(BatchCoordinator, "_save", dying_save)
        with pytest.raises(Killed):
            run_stage(params, run_dir)
        monkeypatch.setattr(BatchCoordinator, "_save", real_save)
        assert fake.created == 1 and not open_states(run_dir / "02_generate")
        run, out, _ = run_stage(params, run_dir)
        assert fake.order[0] == fired[0]
        assert run.stats["batches_resumed"] == 1
        assert set(fake.submitted.values()) == {1}  # every line sent once, the orphan's too
    assert_same_outputs(out, ref_out)
