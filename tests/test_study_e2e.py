"""Stages 03 -> 04 -> 05 through `wavecoder run` on smoke params, from a small hand-written
stage 02 output (the embedded 135M generator may accept nothing on 3 items)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from .conftest import PROJECT, SHARED_DATA
from .test_finetune import learnable_rows, write_jsonl

pytestmark = pytest.mark.slow


def test_finetune_evaluate_report_under_the_runner(tmp_path):
    if not (SHARED_DATA / "humanevalpack").exists():
        pytest.skip(f"reference data not found: {SHARED_DATA / 'humanevalpack'}")
    upstream = tmp_path / "smoke" / "02_generate"
    upstream.mkdir(parents=True)
    write_jsonl(upstream / "codeocean.jsonl", learnable_rows(8))
    (upstream / "manifest.json").write_text(
        json.dumps({"stage": "02_generate", "status": "completed", "fingerprint": "handmade"})
    )
    command = [str(PROJECT / ".venv" / "bin" / "wavecoder"), "run", "params/smoke.yaml",
               "--stages", "03,04,05", "--outputs", str(tmp_path), "--no-progress"]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    evaluate = tmp_path / "smoke" / "04_evaluate"
    metrics = json.loads((evaluate / "metrics.json").read_text())
    rows = metrics["scores"]["rows"]
    expected = {"humaneval", "humanevalpack-fix-python", "humanevalpack-explain-python"}
    for model in ("base", "tuned"):
        assert {r["benchmark"] for r in rows if r["model"] == model} == expected
    assert all(r["problems"] == 2 and 0.0 <= r["pass@1"] <= 1.0 for r in rows)
    for name in ["pass_at_1.png", "failure_kinds.png", "humanevalpack_languages.png",
                 "scores.json", "04_evaluate.html"]:  # fmt: skip
        assert (evaluate / name).exists(), name
    # Explain ran both passes: describe, then write code from the description
    explain = (evaluate / "samples" / "tuned" / "humanevalpack-explain-python.jsonl").read_text()
    passes = sorted(json.loads(line)["pass"] for line in explain.splitlines())
    assert passes == [1, 1, 2, 2]
    results = (evaluate / "results" / "base" / "humaneval.jsonl").read_text().splitlines()
    assert len(results) == 2 and all("verdict" in json.loads(r) for r in results)

    page = (tmp_path / "smoke" / "report.html").read_text()
    assert "Scores: pass@1" in page and "data:image/png;base64," in page
    assert "03 Fine-tune" in page and "04 Evaluate" in page
    assert (tmp_path / "smoke" / "05_report" / "05_report.html").exists()

    tick = time.perf_counter()
    again = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    assert again.stdout.count("skipped (manifest matches)") == 3
    assert time.perf_counter() - tick < 60
