"""Stage 02 end to end: faults through the whole stage, kill -9 and resume, the real embedded
llama.cpp server, and the notebook under the runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import wavecoder as wc
from wavecoder import llm
from wavecoder.generate import stage as sg

from .conftest import PROJECT
from .fake_openai_server import FakeOpenAI

VOLATILE = ("cached", "latency_s", "attempts")


def make_run_dir(root: Path, codes: list[str]) -> Path:
    folder = root / "01_select"
    folder.mkdir(parents=True)
    rows = [
        {
            "row_id": 100 + i,
            "repo": "r",
            "path": f"m{i}.py",
            "func_name": f"f{i}",
            "language": "python",
            "code": code,
            "docstring": "doc",
            "url": "",
            "selection_rank": i,
        }
        for i, code in enumerate(codes)
    ]
    pl.DataFrame(rows).write_parquet(folder / "selected.parquet")
    return root


def fake_overrides(url: str, **extra) -> dict:
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
        "llm.backoff_max_s": 0.5,
        "llm.concurrency": 4,
        "llm.fsync": False,
        "generate.max_items": None,
        "generate.batch_size": 4,
        "generate.task_mix": "balanced",
        "generate.targets": None,  # one task per record, by task_mix
        "generate.leakage_benchmarks": [],
    }
    return {**base, **extra}


def code(i: int, marker: str = "") -> str:
    return f"def func_{i}(x):\n    # {marker}\n    y = x + {i}\n    return y * 2\n"


def run_stage(params, run_dir: Path):
    out = wc.stage_dir(run_dir, "02_generate")
    items = sg.plan(params, sg.load_selected(params, run_dir))
    run = sg.generate_sync(params, out, items, progress=False)
    sg.write_outputs(run, out)
    return run, out, items


def stable(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for call in ("generator", "judge"):
            if row.get(call):
                row[call] = {k: v for k, v in row[call].items() if k not in VOLATILE}
        rows.append(row)
    return rows


def test_every_item_is_accounted_for_once_under_faults(tmp_path):
    markers = [
        "FAULT:generator:429:2",
        "FAULT:generator:500:1",
        "FAULT:generator:slow:1",
        "FAULT:generator:drop:1",
        "FAULT:generator:malformed:1",
        "FAULT:judge:nochoices:1",
        "FAULT:judge:noverdict:99",  # a judge that never gives a verdict
        "FAULT:generator:500:99",  # an endpoint that never recovers for this item
        "FAULT:judge:no:99",  # the judge rejects
        "",
        "",
        "",
    ]
    run_dir = make_run_dir(tmp_path, [code(i, m) for i, m in enumerate(markers)])
    with FakeOpenAI(slow_s=2.0, retry_after="0.1") as fake:
        params = wc.load_params(PROJECT / "params" / "smoke.yaml", fake_overrides(fake.base_url))
        run, out, items = run_stage(params, run_dir)
        calls = fake.count()
    by_row = {r["row_id"]: r for r in run.records}
    assert sorted(by_row) == sorted(i.row_id for i in items) and len(run.records) == len(items)
    assert all(
        r["status"] in ("accepted", "rejected", "failed") and r["reason"] for r in run.records
    )
    assert by_row[106]["reason"] == "judge_unparseable"
    assert (
        by_row[107]["status"] == "failed" and by_row[107]["reason"] == "generator_failed:http_500"
    )
    assert by_row[108]["status"] == "rejected" and by_row[108]["reason"].startswith("judge_no")
    for row in (100, 101, 102, 103, 104, 105, 109, 110, 111):
        assert by_row[row]["status"] == "accepted", by_row[row]["reason"]
    # bounded: at most (max_retries + 1) requests per call, two calls per item
    assert calls <= 2 * len(items) * 3
    # the files agree with the records, and `datasets` reads them
    counts = run.counts()
    for name, status in (("codeocean", "accepted"), ("rejected", "rejected"), ("failed", "failed")):
        assert len((out / f"{name}.jsonl").read_text().splitlines()) == counts[status]
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(out / "codeocean.jsonl"), split="train")
    assert ds.num_rows == counts["accepted"]
    for key in (
        "id",
        "task",
        "language",
        "instruction",
        "input",
        "output",
        "raw_code_id",
        "generator_model",
        "judge_model",
        "verdicts",
    ):
        assert key in ds.column_names
    assert ds[0]["generator_model"] == "fake-gen" and ds[0]["judge_model"] == "fake-judge"
    alpaca = load_dataset("json", data_files=str(out / "alpaca.jsonl"), split="train")
    assert set(alpaca.column_names) == {"instruction", "input", "output"}
    cands = load_dataset("json", data_files=str(out / "candidates.jsonl"), split="train")
    assert cands.num_rows == len(items)
    # metrics and plots
    metrics = sg.summarize(run, params)
    assert metrics["headline"].startswith(f"accepted {counts['accepted']} of {len(items)}")
    assert all(p.exists() for p in sg.make_plots(run, out))
    assert (out / sg.EXAMPLE_DB_FILE).exists()


def test_missing_key_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("WAVECODER_NO_SUCH_KEY", raising=False)
    run_dir = make_run_dir(tmp_path, [code(0)])
    params = wc.load_params(
        PROJECT / "params" / "smoke.yaml",
        fake_overrides(
            "https://llm.example.com/v1", **{"llm.generator.api_key_env": "WAVECODER_NO_SUCH_KEY"}
        ),
    )
    with pytest.raises(llm.LLMConfigError, match="WAVECODER_NO_SUCH_KEY"):
        run_stage(params, run_dir)
    assert not (run_dir / "02_generate" / sg.CACHE_FILE).exists()


CHILD = """
import json, sys
import wavecoder as wc
from wavecoder.generate import stage as sg
params = wc.load_params(sys.argv[1], json.loads(sys.argv[2]))
out = wc.stage_dir(sys.argv[3], "02_generate")
items = sg.plan(params, sg.load_selected(params, sys.argv[3]))
run = sg.generate_sync(params, out, items, progress=False)
sg.write_outputs(run, out)
"""


def test_kill_9_mid_run_then_rerun_loses_nothing(tmp_path):
    codes = [code(i) for i in range(12)]
    with FakeOpenAI(delay_s=0.15) as fake:
        overrides = fake_overrides(fake.base_url, **{"llm.concurrency": 2, "llm.fsync": True})
        params = wc.load_params(PROJECT / "params" / "smoke.yaml", overrides)
        reference, ref_out, items = run_stage(params, make_run_dir(tmp_path / "ref", codes))
        assert fake.count() == 2 * len(items)  # no faults: one generator and one judge call each

        run_dir = make_run_dir(tmp_path / "crash", codes)
        cache = run_dir / "02_generate" / sg.CACHE_FILE
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(PROJECT / "params" / "smoke.yaml"),
                json.dumps(overrides),
                str(run_dir),
            ],
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if cache.exists() and len(cache.read_text().splitlines()) >= 7:
                break
            time.sleep(0.02)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        answered = set(llm.ResponseCache(cache).entries)
        assert 7 <= len(answered) < 2 * len(items)
        assert not (run_dir / "02_generate" / "codeocean.jsonl").exists()

        before = fake.count()
        resumed, out, _ = run_stage(params, run_dir)
        # only the calls never answered before the kill went out again
        assert fake.count() - before == 2 * len(items) - len(answered)
    after = [json.loads(line)["key"] for line in cache.read_text().splitlines() if line.strip()]
    assert not answered & set(after[len(answered) :])
    for name in ("codeocean.jsonl", "rejected.jsonl", "alpaca.jsonl", "candidates.jsonl"):
        assert stable(out / name) == stable(ref_out / name), name
    assert resumed.counts() == reference.counts()


@pytest.mark.slow
def test_stage_against_the_real_embedded_server(tmp_path):
    run_dir = make_run_dir(tmp_path, [code(0), code(1)])
    params = wc.load_params(
        PROJECT / "params" / "smoke.yaml",
        {
            "generate.max_items": 2,
            "generate.task_mix": {"code_generation": 1, "code_summarization": 1},
            "generate.leakage_benchmarks": [],
            "llm.generator.max_tokens": 128,
            "llm.discriminator.max_tokens": 128,
        },
    )
    run, out, items = run_stage(params, run_dir)
    assert len(run.records) == 2 and {r["task"] for r in run.records} == {
        "code_generation",
        "code_summarization",
    }
    assert all(r["status"] in ("accepted", "rejected", "failed") for r in run.records)
    assert run.stats["servers_started"] == 1 and run.stats["answered_new"] >= 2
    assert not [r for r in run.records if r["status"] == "failed"], run.records
    # a rerun answers everything from the cache and starts no server
    again, _, _ = run_stage(params, run_dir)
    assert again.stats["requests"] == 0 and again.stats["servers_started"] == 0
    assert [r["status"] for r in again.records] == [r["status"] for r in run.records]
    assert not llm.server._LIVE_SERVERS


@pytest.mark.slow
def test_notebook_through_the_runner(tmp_path):
    cmd = [
        str(PROJECT / ".venv" / "bin" / "wavecoder"),
        "run",
        str(PROJECT / "params" / "smoke.yaml"),
        "--stages",
        "01,02",
        "--outputs",
        str(tmp_path),
        "--set",
        f"select.embedding_cache={tmp_path}/cache",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "smoke" / "02_generate"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["headline"].startswith("accepted ")
    n = metrics["items"]
    assert n == wc.load_params(PROJECT / "params" / "smoke.yaml").generate.max_items
    assert sum(metrics["counts"].values()) == n
    for name in (
        "candidates.jsonl",
        "codeocean.jsonl",
        "rejected.jsonl",
        "alpaca.jsonl",
        "accept_by_task.png",
        "latency.png",
        sg.EXAMPLE_DB_FILE,
        sg.CACHE_FILE,
    ):
        assert (out / name).exists(), name
    assert "02_generate" in proc.stdout


def test_funnel_counts_validator_and_judge_rejections_per_task():
    from types import SimpleNamespace

    from wavecoder.report.stage import funnel_rows

    records = [
        {"task": "code_generation", "status": "accepted", "reason": "judge_accepted"},
        {"task": "code_generation", "status": "rejected", "reason": "validator:solution_parses"},
        {
            "task": "code_generation",
            "status": "rejected",
            "reason": "validator:solution_parses",
            "judge_accepted": True,
        },
        {"task": "code_generation", "status": "rejected", "reason": "judge_rejected:x"},
        {"task": "code_repair", "status": "failed", "reason": "generator_failed:timeout"},
        {"task": "code_repair", "status": "rejected", "reason": "prefilter:missing_solution"},
    ]
    funnel = sg.funnel_by_task(SimpleNamespace(records=records))
    gen = funnel["code_generation"]
    assert (gen["items"], gen["accepted"], gen["validators"], gen["judge_rejected"]) == (4, 1, 2, 1)
    assert gen["validator:solution_parses"] == 2 and gen["validators_judge_accepted"] == 1
    assert (
        funnel["code_repair"]["generator_failed"] == 1 and funnel["code_repair"]["prefilter"] == 1
    )
    # every item ends in exactly one step
    for counts in funnel.values():
        steps = sum(counts[s] for s in sg.FUNNEL_STEPS if s != "items")
        assert steps == counts["items"]
    rows = {r["task"]: r for r in funnel_rows(funnel)}
    assert rows["code_generation"]["validator checks failed"] == "solution_parses 2"
    assert rows["code_repair"]["of which the judge accepted"] == "not asked"


def test_validators_reject_before_the_judge_and_audit_mode_asks_it(tmp_path):
    """Stage 02 with the fake server: a repair whose solution carries trailing prose is
    stopped by the validators without a judge call; with the audit option the judge is asked
    (and accepts it), the case stays rejected and is counted."""
    from .fake_openai_server import codeocean_answer

    def prose_repairs(body):
        reply = json.loads(codeocean_answer(body))
        if reply.get("task_name") == "Code Repair":
            reply["solution"] += "\nThe return was broken."
        return json.dumps(reply)

    for audit in (False, True):
        run_dir = make_run_dir(tmp_path / f"a{audit}", [code(i) for i in range(4)])
        with FakeOpenAI(answer=prose_repairs) as server:
            params = wc.load_params(
                PROJECT / "params/smoke.yaml",
                overrides=fake_overrides(
                    server.base_url, **{"generate.judge_validator_rejects": audit}
                ),
            )
            run, out, _ = run_stage(params, run_dir)
        repairs = [r for r in run.records if r["task"] == "code_repair"]
        assert repairs and all(r["reason"] == "validator:solution_parses" for r in repairs)
        assert all((r.get("judge") is not None) == audit for r in repairs)
        funnel = sg.funnel_by_task(run)["code_repair"]
        assert funnel["validators"] == len(repairs)
        assert funnel.get("validators_judge_accepted", 0) == (len(repairs) if audit else 0)
        rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
        assert {
            r["validators"][0]["validator"] for r in rejected if r["task"] == "code_repair"
        } == {"solution_parses"}
