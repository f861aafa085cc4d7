"""`wavecoder estimate`: the arithmetic on a small params file and selection, the CLI output
(each figure with its method), and the budget refusal before stage 02 and its override."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest
from wavecoder import cli, runner
from wavecoder.config import load_params
from wavecoder.estimate import (
    OverBudget,
    TokenCounter,
    budget_gate,
    check_budget,
    estimate,
    model_params_b,
)
from wavecoder.generate import ExampleDB, load_tasks, prompts
from wavecoder.generate.stage import load_selected, plan

PROJECT = Path(__file__).resolve().parents[1]
PRICES = {"fake-gen": [2.0, 4.0], "fake-judge": [10.0, 20.0]}


def write_params(folder: Path, **llm_extra) -> Path:
    llm = {
        "generator": {"backend": "openai", "model": "fake-gen", "max_tokens": 300},
        "discriminator": {"backend": "openai", "model": "fake-judge", "max_tokens": 100},
        "prices_per_1m_tokens": PRICES,
        "batch_discount": 0.25,
        **llm_extra,
    }
    data = {
        "extends": str(PROJECT / "params" / "smoke.yaml"),
        "llm": llm,
        "generate": {"max_items": 3, "max_code_chars": 400, "targets": None},  # by task_mix
        "finetune": {
            "base_model": "org/model-6.7b-base",
            "method": "lora",
            "epochs": 2,
            "max_steps": None,
            "max_seq_length": 4096,
            "validation_fraction": 0.0,
        },
        "evaluate": {
            "benchmarks": ["humaneval", "mbpp"],
            "limit": 2,
            "max_new_tokens": 10,
            "models": ["base", "tuned"],
        },
    }
    path = folder / "tiny.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def make_run_dir(run_dir: Path, n: int = 4) -> Path:
    folder = run_dir / "01_select"
    folder.mkdir(parents=True)
    rows = [
        {
            "row_id": 100 + i,
            "language": "python",
            "code": f"def f{i}(x):\n    return x + {i}\n" * (i + 1),
            "selection_rank": i,
        }
        for i in range(n)
    ]
    pl.DataFrame(rows).write_parquet(folder / "selected.parquet")
    return run_dir


def chars() -> TokenCounter:
    return TokenCounter(len, "test: one token a character")


def test_arithmetic_on_a_small_params_file(tmp_path):
    params = load_params(write_params(tmp_path))
    run_dir = make_run_dir(tmp_path / "outputs" / "tiny")
    counter = chars()
    est = estimate(
        params,
        run_dir,
        sample=50,
        accept_rate=0.5,
        counters={"generator": counter, "discriminator": counter},
    )
    # items: the first generate.max_items records; calls: a generator and a judge call each
    assert est.items == 3 and est.calls == 6 and est.sample == 3
    gen, judge = est.roles
    assert (gen.calls, judge.calls) == (3, 3)
    # generator input: the real prompts of the real items, counted (+4 a message, +3)
    items = plan(params, load_selected(params, run_dir))
    specs = load_tasks()
    db = ExampleDB.seeded(specs, params.generate.example_pool_size)
    expected = 0
    for item in items:
        rng = random.Random(f"examples:{params.seed}:{item.id}")
        good, bad = db.sample(
            item.task, params.generate.good_examples, params.generate.bad_examples, rng
        )
        msgs = prompts.generator_messages(
            specs[item.task], item.code, item.language, item.target_language, good, bad, 400
        )
        expected += sum(len(m["content"]) for m in msgs) + 4 * len(msgs) + 3
    assert gen.input_tokens == expected
    # output: upper bound n x max_tokens; typical within it
    assert gen.output_max == 3 * 300 and judge.output_max == 3 * 100
    assert 0 < gen.output_typical <= gen.output_max
    assert 0 < judge.output_typical <= judge.output_max
    assert est.output_max == 1200
    # USD: tokens x price per role; batch = interactive x (1 - batch_discount)
    usd = (
        gen.input_tokens * 2.0
        + gen.output_typical * 4.0
        + judge.input_tokens * 10.0
        + judge.output_typical * 20.0
    ) / 1e6
    assert est.usd() == pytest.approx(usd)
    assert est.usd(batch=True) == pytest.approx(usd * 0.75)
    upper = (gen.input_tokens * 2.0 + 900 * 4.0 + judge.input_tokens * 10.0 + 300 * 20.0) / 1e6
    assert est.usd(upper=True) == pytest.approx(upper)
    # training: round(3 x 0.5) = 2 accepted x 2 epochs x tokens/example at 6,700 tok/s (6.7B)
    t = est.train
    assert t["examples"] == 2 and t["tokens"] == 2 * 2 * t["example_tokens"]
    assert t["rate"] == 6700 and t["hours"] == pytest.approx(t["tokens"] / 6700 / 3600)
    # evaluation: 2 benchmarks x limit 2 x 2 models x 10 new tokens at 530 tok/s (6.7B)
    e = est.evaluation
    assert e["generations"] == 8 and e["tokens"] == 80
    assert e["hours"] == pytest.approx(80 / 530 / 3600)
    assert est.gpu_hours() == pytest.approx(t["hours"] + e["hours"])


def test_full_finetuning_and_model_sizes(tmp_path):
    params = load_params(
        write_params(tmp_path), {"finetune.method": "full", "finetune.base_model": "x/y-7b"}
    )
    counter = chars()
    est = estimate(
        params, None, sample=3, counters={"generator": counter, "discriminator": counter}
    )
    # the 6.7B shape (checkpointed) scaled to 7B, then / (8/6) for the weight gradients
    assert est.train["rate"] == pytest.approx(6700 * 6.7 / 7 * 6 / 8)
    assert "stage 01 has not run" in est.items_method and "representative" in est.code_method
    assert est.items == 3  # min(generate.max_items, select.k)
    assert model_params_b("bigcode/starcoder") == 15.5
    assert model_params_b("deepseek-ai/deepseek-coder-6.7b-base") == 6.7
    assert model_params_b("HuggingFaceTB/SmolLM2-135M-Instruct") == pytest.approx(0.135)
    assert model_params_b("gpt-4") is None


def test_no_price_is_unknown(tmp_path):
    params = load_params(write_params(tmp_path), {"llm.prices_per_1m_tokens": {"fake-gen": [1, 1]}})
    counter = chars()
    est = estimate(
        params, None, sample=3, counters={"generator": counter, "discriminator": counter}
    )
    assert est.usd() is None
    text = "unknown (no price for fake-judge in llm.prices_per_1m_tokens)"
    assert text in est.usd_text() and text in est.one_line()


def test_cli_prints_each_figure_with_its_method(tmp_path, capsys):
    path = write_params(tmp_path)
    make_run_dir(tmp_path / "outputs" / "tiny")
    assert cli.main(["estimate", str(path), "--outputs", str(tmp_path / "outputs")]) == 0
    out = capsys.readouterr().out
    for needle in (
        "items: 3  [stage 01's selection",
        "calls: 6  [every item: 1 generator call + 1 judge call",
        "generator (fake-gen): 3 calls",
        "judge (fake-judge): 3 calls",
        "tokenizer: approximation: characters / 4",
        "tokens: ",
        "at most: every call writes its role's max_tokens",
        "USD interactive: $",
        "llm.prices_per_1m_tokens]",
        "USD batch: $",
        "(1 - llm.batch_discount 0.25)",
        "GPU hours, training:",
        "6,700 tok/s (DESIGN.md, 6.7B shape",
        "GPU hours, evaluation:",
        "530 tok/s (DESIGN.md: HF generate",
        "estimate: 3 items, 6 LLM calls",
    ):
        assert needle in out, needle
    # no selection: says so and which representative code it used
    other = tmp_path / "elsewhere"
    assert cli.main(["estimate", str(path), "--outputs", str(other)]) == 0
    out = capsys.readouterr().out
    assert "stage 01 has not run" in out and "representative code of 531 characters" in out


def test_budget_refusal_and_override(tmp_path, capsys, monkeypatch):
    path = write_params(tmp_path, budget_usd=0.000001)
    run_dir = make_run_dir(tmp_path / "outputs" / "tiny")
    (run_dir / "01_select" / "manifest.json").write_text(json.dumps({"status": "completed"}))
    params = load_params(path)
    counter = chars()
    est = estimate(params, run_dir, counters={"generator": counter, "discriminator": counter})
    assert "exceeds llm.budget_usd" in check_budget(est, params, over_budget=False)
    assert check_budget(est, params, over_budget=True) is None
    assert check_budget(est, load_params(path, {"llm.budget_usd": 1e6}), False) is None

    ran = []

    def fake_stage(stage, *args, **kwargs):
        ran.append(stage.name)
        return runner.StageResult(stage.name, "completed", 0.0, "stub")

    monkeypatch.setattr(runner, "run_stage", fake_stage)
    argv = ["run", str(path), "--stages", "02", "--outputs", str(tmp_path / "outputs")]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "estimate: 3 items, 6 LLM calls" in captured.out
    assert "error: estimated interactive cost $" in captured.err
    assert "exceeds llm.budget_usd" in captured.err and "--over-budget" in captured.err
    assert ran == []  # refused before stage 02 started
    assert cli.main([*argv, "--over-budget"]) == 0
    assert "estimate: 3 items" in capsys.readouterr().out and ran == ["02_generate"]
    # no budget: the line is printed, the stage runs
    lines: list[str] = []
    budget_gate(load_params(path, {"llm.budget_usd": None}), run_dir, echo=lines.append)
    assert lines and lines[0].startswith("estimate: ")
    with pytest.raises(OverBudget):
        budget_gate(params, run_dir, echo=lines.append)
