"""The benchmark scripts' GPU paths cannot run on the CPU machines where the tests run; their
code is still checked here end to end on a tiny shape, so that they work when a GPU is there."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from .conftest import PROJECT


def test_finetune_throughput_gpu_path_runs_on_a_tiny_shape():
    command = [sys.executable, str(PROJECT / "bench" / "finetune_throughput.py"), "--gpu"]
    command += ["--device", "cpu", "--shapes", "tiny", "--steps", "2", "--warmup", "1"]
    command += ["--rounds", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=PROJECT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "tiny:" in out and "LoRA r=16 all-linear" in out and "grad ckpt True" in out
    ratio = re.search(r"ours ([\d,]+) tok/s \| ratio ([\d.]+)", out)
    assert ratio and float(ratio.group(2)) > 0 and int(ratio.group(1).replace(",", "")) > 0
    assert re.search(r"full fine-tuning, estimated x1\.33 compute: [\d.]+ h", out)


def test_coreset_gpu_path_runs_on_the_cpu():
    command = [sys.executable, str(PROJECT / "bench" / "coreset.py"), "--gpu", "--device", "cpu"]
    command += ["--n", "3000", "--d", "64", "--k", "50"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=PROJECT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["picked"] == 50 and result["dtype"] == "float16" and result["ours_s"] > 0
