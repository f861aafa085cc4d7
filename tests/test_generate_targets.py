"""Per-task targets in stage 02: rounds draw from stage 01's ranked selection, then its reserve,
giving tasks to rows where targets are unmet, until they are met or the rows run out."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import wavecoder as wc
from wavecoder.config import ParamsError
from wavecoder.generate import stage as sg
from wavecoder.generate.pipeline import TargetPlan, allocate
from wavecoder.report.stage import targets_rows
from wavecoder.select import stage as stage_select

from .conftest import PROJECT
from .fake_openai_server import FakeOpenAI, codeocean_answer
from .test_finetune import tokenizer  # noqa: F401, F811  (fixture)
from .test_stage_generate import code, fake_overrides

REJECT = "REJECT_ME"


def judge_rejects_marked(body: dict) -> str:
    """All-yes verdicts except for raw code carrying the marker (the judge sees the raw code)."""
    reply = json.loads(codeocean_answer(body))
    prompt = body["messages"][-1]["content"]
    raw = re.search(r"Raw code the case was generated from:\n```\w*\n(.*?)```", prompt, re.S)
    if "overall" in reply and raw and REJECT in raw.group(1):
        reply["overall"] = "no"
        reply["analysis"] = "The case does not match the raw code."
    return json.dumps(reply)


def write_selection(root: Path, codes: list[str], k: int) -> Path:
    """selected.parquet with the first k rows, reserve.parquet with the rest."""
    folder = root / "01_select"
    folder.mkdir(parents=True)
    frame = pl.DataFrame(
        [
            {
                "row_id": 500 + i,
                "repo": "r",
                "path": f"m{i}.py",
                "func_name": f"func_{i}",
                "language": "python",
                "code": text,
                "docstring": "doc",
                "url": "",
                "selection_rank": i,
            }
            for i, text in enumerate(codes)
        ]
    )
    frame.head(k).write_parquet(folder / "selected.parquet")
    frame.tail(len(codes) - k).write_parquet(folder / "reserve.parquet")
    return root


def run_targets(tmp: Path, codes: list[str], k: int, targets: dict, **extra):
    run_dir = write_selection(tmp, codes, k)
    with FakeOpenAI(answer=judge_rejects_marked) as server:
        params = wc.load_params(
            PROJECT / "params/smoke.yaml",
            overrides=fake_overrides(
                server.base_url,
                **{"generate.targets": targets, "generate.batch_size": 4, **extra},
            ),
        )
        out = wc.stage_dir(run_dir, "02_generate")
        planned = sg.plan(params, sg.load_selected(params, run_dir))
        run = sg.generate_sync(params, out, planned, progress=False)
        sg.write_outputs(run, out)
        calls = server.count()
    return run, out, calls


def test_allocate_meets_deficits_at_the_observed_rate_within_the_room():
    none = Counter()
    # nothing tried yet: the prior rate 1/2 asks for twice the deficit
    assert allocate({"code_generation": 3, "code_repair": 1}, none, none, 20) == {
        "code_generation": 6,
        "code_repair": 2,
    }
    # a task that accepted 9 of 10 asks for about its deficit
    tried, accepted = Counter(code_generation=10), Counter(code_generation=9)
    assert allocate({"code_generation": 4}, tried, accepted, 20) == {"code_generation": 5}
    # too little room: shares by want, every task with a deficit still gets a row
    counts = allocate(
        {"code_generation": 100, "code_summarization": 1, "code_repair": 0}, none, none, 5
    )
    assert sum(counts.values()) == 5
    assert counts["code_summarization"] >= 1 and "code_repair" not in counts
    # met targets ask for nothing
    assert allocate({"code_generation": 0, "code_repair": -2}, none, none, 8) == {}


def test_targets_are_met_drawing_past_k_into_the_reserve(tmp_path):
    """12 selected + 28 in reserve; a third of the rows are rejected by the judge. The stage
    keeps drawing in rank order past k until every target is met, then stops."""
    codes = [code(i, REJECT if i % 3 == 0 else "") for i in range(40)]
    targets = {"code_generation": 6, "code_summarization": 3, "code_repair": 3}
    run, out, _ = run_targets(tmp_path / "a", codes, 12, targets)
    accepted = Counter(r["task"] for r in run.by_status("accepted"))
    for task, wanted in targets.items():
        assert accepted[task] >= wanted, (task, accepted)
    assert accepted["code_translation"] == 0
    assert not [r for r in run.records if r["task"] == "code_translation"]
    ranks = [r["selection_rank"] for r in run.records]
    assert ranks == sorted(ranks) == list(range(len(ranks)))  # k-center order, no row twice
    assert 12 < len(ranks) < 40  # past k, and stopped once met
    summary = run.stats["targets"]
    assert summary["met"] and summary["drawn"] == len(ranks) and summary["available"] == 40
    # the rounds before the last could not have met every target
    last = max(r["round"] for r in run.records)
    before = Counter(
        r["task"] for r in run.records if r["status"] == "accepted" and r["round"] < last
    )
    assert any(before[t] < n for t, n in targets.items())
    metrics = sg.summarize(run, wc.load_params(PROJECT / "params/smoke.yaml"))
    table = {row["task"]: row for row in metrics["targets"]}
    assert table["code_generation"]["target"] == 6 and table["code_generation"]["met"]
    assert {row["round"] for row in metrics["accept_by_round"]} == set(range(last + 1))
    rows = {row["task"]: row for row in targets_rows(metrics)}
    assert rows["code_repair"]["met"] == "yes" and rows["code_repair"]["rounds"] >= 1
    lines = (out / "codeocean.jsonl").read_text().splitlines()
    assert len(lines) == sum(accepted.values())


def test_a_rerun_makes_the_same_rounds_from_the_cache(tmp_path):
    codes = [code(i, REJECT if i % 4 == 1 else "") for i in range(30)]
    targets = {"code_generation": 4, "code_summarization": 2, "code_translation": 2}
    run_dir = tmp_path / "r"
    first, out, calls_first = run_targets(run_dir, codes, 8, targets)
    before = (out / "candidates.jsonl").read_bytes()
    # same run folder, same cache: the same rounds, and not one new call
    with FakeOpenAI(answer=judge_rejects_marked) as server:
        params = wc.load_params(
            PROJECT / "params/smoke.yaml",
            overrides=fake_overrides(
                server.base_url, **{"generate.targets": targets, "generate.batch_size": 4}
            ),
        )
        planned = sg.plan(params, sg.load_selected(params, run_dir))
        second = sg.generate_sync(params, out, planned, progress=False)
        assert server.count() == 0
    assert [r["id"] for r in second.records] == [r["id"] for r in first.records]
    assert [r["round"] for r in second.records] == [r["round"] for r in first.records]
    sg.write_outputs(second, out)
    keep = ("id", "task", "status", "reason", "round", "case", "verdict")
    assert [{k: json.loads(x).get(k) for k in keep} for x in before.decode().splitlines()] == [
        {k: json.loads(x).get(k) for k in keep}
        for x in (out / "candidates.jsonl").read_text().splitlines()
    ]
    assert calls_first > 0


def test_rows_running_out_leaves_targets_unmet_and_says_so(tmp_path):
    codes = [code(i, REJECT if i % 2 else "") for i in range(10)]
    run, _, _ = run_targets(tmp_path / "x", codes, 6, {"code_generation": 20})
    assert len(run.records) == 10  # every row drawn, reserve included
    summary = run.stats["targets"]
    assert not summary["met"] and summary["accepted"]["code_generation"] == 5
    assert any("ran out" in note for note in run.stats["notes"])


def test_without_a_target_flag_the_reserve_is_not_drawn(tmp_path):
    run_dir = write_selection(tmp_path / "n", [code(i) for i in range(10)], 4)
    params = wc.load_params(
        PROJECT / "params/smoke.yaml",
        overrides={"generate.max_items": None, "generate.targets": None},
    )
    assert sg.load_selected(params, run_dir).height == 4
    with_targets = wc.load_params(
        PROJECT / "params/smoke.yaml",
        overrides={"generate.max_items": None, "generate.targets": {"code_repair": 1}},
    )
    frame = sg.load_selected(with_targets, run_dir)
    assert frame["selection_rank"].to_list() == list(range(10))
    assert isinstance(sg.plan(with_targets, frame), TargetPlan)


def test_reserve_extends_the_k_center_order_without_changing_the_first_k(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(60, 8)).astype(np.float32)
    notes: list[str] = []
    first, reserve = stage_select.kcenter_with_reserve(embeddings, 10, 15, 3, "cpu", notes)
    plain, none = stage_select.kcenter_with_reserve(embeddings, 10, 0, 3, "cpu", notes)
    assert first == plain and none == [] and len(reserve) == 15
    assert not set(first) & set(reserve) and not notes
    cut_first, cut = stage_select.kcenter_with_reserve(embeddings, 50, 30, 3, "cpu", notes)
    assert len(cut) == 10 and "cut from 30 to 10" in notes[0]
    pool = pl.DataFrame({"row_id": list(range(60)), "code": [f"c{i}" for i in range(60)]})
    selected = stage_select.write_selection(pool, first, reserve, tmp_path)
    kept = pl.read_parquet(tmp_path / "reserve.parquet")
    assert selected["selection_rank"].to_list() == list(range(10))
    assert kept["selection_rank"].to_list() == list(range(10, 25))
    assert kept["row_id"].to_list() == reserve


@pytest.mark.parametrize(
    "targets, message",
    [({"code_gen": 1}, "unknown task"), ({"code_repair": -1}, "negative"), ({}, "every target")],
)
def test_bad_targets_are_named(targets, message):
    with pytest.raises(ParamsError, match=message):
        wc.load_params(PROJECT / "params/smoke.yaml", overrides={"generate.targets": targets})


def test_estimate_plans_items_for_the_targets_at_the_measured_or_paper_rate(tmp_path):
    from wavecoder.estimate import PAPER_ACCEPT_RATE, planned_items

    targets = {"code_generation": 40, "code_repair": 10}
    params = wc.load_params(
        PROJECT / "params/smoke.yaml",
        overrides={"generate.max_items": None, "generate.targets": targets, "select.k": 500},
    )
    items, how, _ = planned_items(params, tmp_path / "no-run")
    expected = {t: -(-n // PAPER_ACCEPT_RATE) for t, n in targets.items()}
    assert Counter(i.task for i in items) == {t: int(n) for t, n in expected.items()}
    assert "19,915 of 20K" in how
    # a run that measured its own accept rates: 40 / 0.5 and 10 / 0.25
    stage = tmp_path / "run" / "02_generate"
    stage.mkdir(parents=True)
    rates = {"code_generation": {"rate": 0.5, "n": 10}, "code_repair": {"rate": 0.25, "n": 8}}
    (stage / "metrics.json").write_text(json.dumps({"accept_by_task": rates}))
    items, how, _ = planned_items(params, tmp_path / "run")
    assert Counter(i.task for i in items) == {"code_generation": 80, "code_repair": 40}
    assert "measured" in how
    # more than the records available: cut to select.k (no reserve), proportionally
    small = params.model_copy(update={"select": params.select.model_copy(update={"k": 60})})
    items, how, _ = planned_items(small, tmp_path / "run")
    assert Counter(i.task for i in items) == {"code_generation": 40, "code_repair": 20}
    assert "cut to the 60 records" in how


def test_task_seeds_mix_trains_when_stage_02_accepted_nothing(tmp_path, tokenizer):  # noqa: F811
    """The smoke preset mixes in the task specs' good seed cases, so an empty codeocean.jsonl
    (a tiny model that accepted nothing) still gives stage 03 data; without the mix it is a
    clear error naming the file."""
    from wavecoder.finetune import data as D
    from wavecoder.finetune.stage import prepare_data

    seeds = D.task_seed_records()
    assert {r.task for r in seeds} == {
        "code_generation",
        "code_summarization",
        "code_repair",
        "code_translation",
    }
    assert all(r.output.strip() and r.source == "task-seeds" for r in seeds)
    empty = tmp_path / "02_generate" / "codeocean.jsonl"
    empty.parent.mkdir()
    empty.write_text("")
    smoke = wc.load_params(PROJECT / "params/smoke.yaml")
    assert smoke.finetune.mix_with == "task-seeds"
    prepared = prepare_data(smoke, tokenizer, empty, progress=False)
    trained = prepared.train_records + prepared.val_records
    assert sorted(r.id for r in trained) == sorted(r.id for r in seeds)
    plain = wc.load_params(PROJECT / "params/smoke.yaml", overrides={"finetune.mix_with": None})
    with pytest.raises(D.DataError, match="empty"):
        prepare_data(plain, tokenizer, empty, progress=False)
