"""End to end: `wavecoder run params/smoke.yaml --stages 01` through papermill."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
from wavecoder.runner import StageResult, format_summary, select_stages

from .conftest import PROJECT


def wavecoder(*args: str, cwd=PROJECT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wavecoder.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("outputs")
    cache = tmp_path_factory.mktemp("cache")
    args = (
        "run",
        "params/smoke.yaml",
        "--stages",
        "01",
        "--outputs",
        str(outputs),
        "--set",
        f"select.embedding_cache={cache}",
        "--no-progress",
    )
    first = wavecoder(*args)
    tick = time.perf_counter()
    second = wavecoder(*args)
    second_seconds = time.perf_counter() - tick
    return outputs / "smoke" / "01_select", first, second, second_seconds, args


def test_stage_01_writes_its_products(smoke_run):
    folder, first, *_ = smoke_run
    assert first.returncode == 0, first.stdout + first.stderr
    for name in [
        "selected.parquet",
        "random.parquet",
        "pool.parquet",
        "raw.parquet",
        "embeddings.npy",
        "metrics.json",
        "funnel.png",
        "selection_map.png",
        "lengths.png",
        "languages.png",
        "01_select.ipynb",
        "01_select.html",
        "manifest.json",
    ]:
        assert (folder / name).exists(), name
    selected = pl.read_parquet(folder / "selected.parquet")
    pool = pl.read_parquet(folder / "pool.parquet")
    assert selected.height == 20 and pool.height == 300
    assert selected["selection_rank"].to_list() == list(range(20))
    # the saved records are the selected ones (not the first N, as in the paper's script)
    assert selected["row_id"].to_list() != pool["row_id"].head(20).to_list()
    assert set(selected["row_id"]) <= set(pool["row_id"])
    assert np.load(folder / "embeddings.npy").shape == (300, 384)

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["funnel"][0]["step"] == "loaded"
    assert [s["step"] for s in metrics["funnel"]][1:] == [
        "length",
        "blacklist",
        "docstring",
        "exact_duplicate",
        "near_duplicate",
        "decontamination",
    ]
    assert (
        metrics["diversity"]["kcenter"]["covering_radius"]
        <= metrics["diversity"]["random"]["covering_radius"]
    )
    assert "selected 20 of 300" in metrics["headline"]


def test_manifest_records_provenance(smoke_run):
    folder, *_ = smoke_run
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["params"]["select"]["k"] == 20 and manifest["seed"] == 0
    assert "tree:python:stdlib" in manifest["inputs"]
    # corpus trees by label, files inside the project relative to it: no machine's checkout path
    assert not any(str(PROJECT) in key for key in manifest["inputs"])
    assert "config.py" in manifest["lib_sha256"]
    assert "select/coreset.py" in manifest["stage_sources_sha256"]
    assert manifest["packages"]["torch"].startswith("2.")
    assert {"commit", "dirty"} <= set(manifest["git"])
    assert manifest["started"] < manifest["finished"]
    assert "selected.parquet" in manifest["outputs"]


def test_rerun_is_skipped_quickly(smoke_run):
    folder, first, second, seconds, _ = smoke_run
    assert second.returncode == 0, second.stderr
    assert "skipped" in second.stdout and "selected 20 of 300" in second.stdout
    assert seconds < 30


def test_selection_is_deterministic(smoke_run, tmp_path):
    folder, *_, args = smoke_run
    again = list(args)
    again[again.index("--outputs") + 1] = str(tmp_path)
    result = wavecoder(*again)
    assert result.returncode == 0, result.stdout + result.stderr
    a = pl.read_parquet(folder / "selected.parquet")["url"].to_list()
    b = pl.read_parquet(tmp_path / "smoke" / "01_select" / "selected.parquet")["url"].to_list()
    assert a == b


def test_params_typo_fails_before_running(tmp_path):
    result = wavecoder(
        "run", "params/smoke.yaml", "--outputs", str(tmp_path), "--set", "select.kk=3"
    )
    assert result.returncode == 2
    assert "unknown key 'select.kk'" in result.stderr and "did you mean 'select.k'" in result.stderr
    assert not (tmp_path / "smoke" / "01_select" / "01_select.ipynb").exists()


def test_failing_stage_keeps_notebook_and_names_the_error(tmp_path):
    result = wavecoder(
        "run",
        "params/smoke.yaml",
        "--outputs",
        str(tmp_path),
        "--no-progress",
        "--set",
        "select.k=5000",
        "--set",
        f"select.embedding_cache={tmp_path}/cache",
    )
    assert result.returncode == 1
    assert "stage 01_select failed: ValueError: the pool has 300 records" in result.stderr
    executed = tmp_path / "smoke" / "01_select" / "01_select.ipynb"
    nb = json.loads(executed.read_text())
    errors = [
        o
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert errors and errors[0]["ename"] == "ValueError"
    manifest = json.loads((executed.parent / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "select.k=5000" in manifest["error"]
    assert (executed.parent / "01_select.html").exists()
    # the next run does not skip a failed stage
    assert (
        "skipped"
        not in wavecoder(
            "run",
            "params/smoke.yaml",
            "--outputs",
            str(tmp_path),
            "--no-progress",
            "--set",
            "select.k=5000",
            "--set",
            f"select.embedding_cache={tmp_path}/cache",
        ).stdout
    )


def test_missing_corpus_file_fails_before_running(tmp_path):
    result = wavecoder(
        "run",
        "params/smoke.yaml",
        "--outputs",
        str(tmp_path),
        "--set",
        "corpus.source=codesearchnet",
        "--set",
        f"corpus.codesearchnet_paths=[{tmp_path}/missing.jsonl]",
    )
    assert result.returncode == 2
    assert f"corpus path not found: {tmp_path}/missing.jsonl" in result.stderr


def test_stage_selection_and_summary():
    assert [s.name for s in select_stages("01")] == ["01_select"]
    assert [s.name for s in select_stages("select")] == ["01_select"]
    with pytest.raises(ValueError, match="unknown stage '09'"):
        select_stages("09")
    table = format_summary([StageResult("01_select", "completed", 12.5, "selected 5")])
    assert "01_select" in table and "12.5" in table and "selected 5" in table


def test_stage_whose_upstream_never_ran_fails_early(tmp_path):
    from wavecoder.runner import run_study

    with pytest.raises(ValueError, match="needs 01_select"):
        run_study(PROJECT / "params/smoke.yaml", stages="02", outputs=tmp_path, echo=lambda s: None)


def test_stage_fingerprint_covers_the_code_the_stage_reaches():
    from wavecoder.runner import stage_sources_sha256

    select_files = stage_sources_sha256(PROJECT / "notebooks" / "01_select.ipynb")
    assert {"select/coreset.py", "select/stage.py", "select/filters.py", "config.py"} <= set(
        select_files
    )
    assert not any(f.startswith(("evaluate/", "finetune/", "generate/")) for f in select_files)
    evaluate_files = stage_sources_sha256(PROJECT / "notebooks" / "04_evaluate.ipynb")
    assert {"evaluate/sandbox.py", "evaluate/_pyzygote.py", "evaluate/stage.py"} <= set(
        evaluate_files
    )
    generate_files = stage_sources_sha256(PROJECT / "notebooks" / "02_generate.ipynb")
    assert "generate/task_specs/code_repair.yaml" in generate_files
