"""Stage 03 end to end with the real SmolLM2-135M (converted from the GGUF once, cached):
a LoRA run that learns, the command line killed and resumed, the notebook under the runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from wavecoder.finetune import data as D
from wavecoder.finetune import stage as S
from wavecoder.finetune import tuned as TU
from wavecoder.finetune.plots import read_log
from wavecoder.stages import FINETUNE

from .conftest import PROJECT
from .test_finetune import learnable_rows, write_jsonl

SMOKE = PROJECT / "params" / "smoke.yaml"
PYTHON = sys.executable
pytestmark = pytest.mark.slow


@pytest.mark.slow
def test_lora_on_smollm2_learns_a_small_set_and_the_adapter_reloads(tmp_path):
    from wavecoder import load_params

    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(4))
    params = load_params(
        SMOKE,
        {
            "finetune.data_file": str(data),
            "finetune.mix_with": None,  # the learnable rows only
            "finetune.max_steps": 8,
            "finetune.batch_size": 4,
            "finetune.packing": False,
            "finetune.learning_rate": 2e-3,
            "finetune.warmup_ratio": 0.0,
            "finetune.lr_scheduler": "constant_with_warmup",
            "finetune.validation_fraction": 0.0,
            "finetune.lora_dropout": 0.0,
        },
    )
    out = tmp_path / "03_finetune"
    result = S.finetune(params, out, progress=False)
    assert result.global_step == 8
    assert result.last_loss < 0.5 * result.first_loss, (result.first_loss, result.last_loss)

    model, tokenizer = TU.load_tuned(out)
    record = D.load_records(data)[2]
    sample = TU.generate_samples(model, tokenizer, [record], max_new_tokens=16)[0]
    assert sample["generated"].strip().startswith("def charlie():"), sample["generated"]


@pytest.mark.slow
def test_command_line_killed_then_resumed(tmp_path):
    """SIGKILL the CLI once a checkpoint exists; the rerun resumes from it and finishes."""
    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(8))
    out = tmp_path / "03_finetune"
    command = [
        PYTHON, "-m", "wavecoder.finetune.train", "--params", str(SMOKE), "--out", str(out),
        "--data", str(data), "--no-progress",
        "--set", "finetune.max_steps=6", "--set", "finetune.save_steps=2",
        "--set", "finetune.batch_size=1", "--set", "finetune.validation_fraction=0",
        "--set", "finetune.mix_with=null",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    deadline = time.time() + 600
    checkpoints = out / FINETUNE.outputs["checkpoints"]
    while time.time() < deadline and proc.poll() is None:
        if (checkpoints / "checkpoint-2" / "trainer_state.json").exists():
            time.sleep(0.5)
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / FINETUNE.outputs["tuned_model"]).exists()

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6 steps" in done.stdout
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["resumed_from"] >= 2 and metrics["global_step"] == 6
    steps = [
        e["step"] for e in read_log(out / FINETUNE.outputs["train_log"]) if e["kind"] == "train"
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_command_line_names_a_bad_target_module(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(4))
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "wavecoder.finetune.train",
            "--params",
            str(SMOKE),
            "--out",
            str(tmp_path / "out"),
            "--data",
            str(data),
            "--set",
            "finetune.lora_target_modules=[q_proj, attn_fused]",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2
    assert "attn_fused" in done.stderr and "q_proj" in done.stderr


@pytest.mark.slow
def test_notebook_runs_under_the_runner(tmp_path):
    """Stage 03 through `wavecoder run` on a small hand-written stage 02 output."""
    upstream = tmp_path / "smoke" / "02_generate"
    upstream.mkdir(parents=True)
    rows = learnable_rows(8)
    rows[0]["input"] = "def alpha(): pass"
    write_jsonl(upstream / "codeocean.jsonl", rows)
    (upstream / "manifest.json").write_text(
        json.dumps({"stage": "02_generate", "status": "completed", "fingerprint": "handmade"})
    )
    wavecoder = PROJECT / ".venv" / "bin" / "wavecoder"
    done = subprocess.run(
        [str(wavecoder), "run", str(SMOKE), "--stages", "03", "--outputs", str(tmp_path),
         "--no-progress"],
        capture_output=True,
        text=True,
        timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stage = tmp_path / "smoke" / "03_finetune"
    metrics = json.loads((stage / "metrics.json").read_text())
    assert "3 steps" in metrics["headline"]
    for name in ["loss.png", "throughput.png", "train_log.jsonl", "tuned_model.json",
                 "samples.jsonl", "03_finetune.html", "adapter/adapter_model.safetensors",
                 "adapter/README.md"]:  # fmt: skip
        assert (stage / name).exists(), name
    tuned = TU.TunedModel.load(stage)
    assert tuned.adapter == "adapter" and tuned.weights()[1] == (stage / "adapter").resolve()
    assert "headline" in metrics and metrics["notes"] == []
    assert json.loads((stage / "manifest.json").read_text())["status"] == "completed"
