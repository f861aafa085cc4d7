"""What stage 03 produced, as one record (`tuned_model.json`), and using it: `load_tuned` for
(model, tokenizer), `generate_samples` for greedy answers.

Stage 03 writes the record; stage 04 (`wavecoder.evaluate.stage.models_to_evaluate`), the
report and `load_tuned` read it with `TunedModel.load`, and `TunedModel.weights` is the one
rule for which weights to load. Light to import (no torch): the report reads it too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from wavecoder.finetune import data as D
from wavecoder.io import read_json, write_json
from wavecoder.stages import FINETUNE


@dataclass(frozen=True)
class TunedModel:
    """The fine-tuned model of a stage 03 folder. Paths are stored relative to the folder when
    they lie in the same project (two clones of a run write the same bytes), else absolute."""

    method: str  # "lora" (an adapter on the base) or "full"
    base_model: str  # finetune.base_model as the params name it
    base_model_path: str  # the folder it resolved to (a hub id, GGUF or folder, converted)
    prompt: str  # the prompt format it was trained with: stage 04 must ask in the same
    max_seq_length: int
    dtype: str  # of the saved full or merged weights (finetune.save_dtype, or the base's)
    adapter: str | None = None  # LoRA adapter folder
    model: str | None = None  # fully fine-tuned model folder
    merged: str | None = None  # base with the adapter merged in (finetune.merge_adapter)
    data_sha256: str = ""
    global_step: int = 0
    optimizer: str = ""
    batch: dict[str, Any] | None = None  # the optimizer step as planned (BatchPlan.as_metrics)
    folder: Path = field(default=Path("."), compare=False)  # where it was read from; not saved

    @classmethod
    def load(cls, folder: str | Path) -> TunedModel:
        """The record in a stage 03 folder (outputs/<run>/03_finetune); errors name the file
        and, for an incomplete record, the missing key."""
        folder = Path(folder)
        path = folder / FINETUNE.outputs["tuned_model"]
        stored = read_json(path)
        if stored is None:
            raise FileNotFoundError(f"{path} not found: run stage 03 first")
        if not isinstance(stored, dict):
            raise ValueError(f"{path}: expected a JSON object")
        keys = {f.name for f in fields(cls) if f.name != "folder"}
        required = [f.name for f in fields(cls) if f.default is f.default_factory is MISSING]
        missing = [k for k in required if k not in stored]
        if missing:
            raise ValueError(f"{path}: missing key {missing[0]!r} (it has {sorted(stored)})")
        return cls(**{k: v for k, v in stored.items() if k in keys}, folder=folder)

    def save(self, folder: str | Path) -> Path:
        """tuned_model.json in `folder`, paths inside it relative to it."""
        folder = Path(folder).resolve()
        record = asdict(self)
        record.pop("folder")
        for key in ("base_model_path", "adapter", "model", "merged"):
            if record[key]:
                record[key] = _relative(Path(record[key]), folder)
        return write_json(folder / FINETUNE.outputs["tuned_model"], record)

    def path(self, key: str) -> Path | None:
        """One of the stored paths ("adapter", "model", "merged", "base_model_path"), absolute."""
        value = getattr(self, key)
        return None if not value else (self.folder / value).resolve()

    def weights(self, prefer_merged: bool = True) -> tuple[Path, Path | None]:
        """What to load, as (model folder, adapter folder or None): the fully tuned model; else
        the merged one when it is there and `prefer_merged`; else the adapter on its base."""
        if self.model:
            return self._existing("model"), None
        merged = self.path("merged")
        if prefer_merged and merged is not None and merged.exists():
            return merged, None
        if not self.adapter:
            raise ValueError(f"{self._file()}: missing key 'adapter' (method {self.method})")
        return self._existing("base_model_path"), self._existing("adapter")

    def _existing(self, key: str) -> Path:
        path = self.path(key)
        if path is None or not path.exists():
            raise FileNotFoundError(f"{self._file()}: {key} {path} does not exist")
        return path

    def _file(self) -> Path:
        return self.folder / FINETUNE.outputs["tuned_model"]


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to `folder` when they lie in one tree (the same project: the model cache
    beside the run, e.g. "../../cache/models/..."), so clones in different places write the same
    record; absolute when they meet only near the root."""
    path = path.resolve()
    common = Path(os.path.commonpath([path, folder]))
    if len(common.parts) < 3:  # "/" or one top folder such as /tmp or /home
        return str(path)
    return os.path.relpath(path, folder)


def load_tuned(out: str | Path, dtype: Any = None, prefer_merged: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) of a stage 03 folder, as `TunedModel.weights` says; float32 unless
    `dtype` is given."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path, adapter = TunedModel.load(out).weights(prefer_merged)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype or torch.float32)
    if adapter is None:
        return model, AutoTokenizer.from_pretrained(model_path)
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter), AutoTokenizer.from_pretrained(adapter)


def generate_samples(
    model: Any,
    tokenizer: Any,
    records: Sequence[D.Record],
    style: str = "alpaca",
    max_new_tokens: int = 96,
) -> list[dict[str, str]]:
    """Greedy answers of `model` to the records' prompts (one at a time: no padding effects)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    samples = []
    for record in records:
        prompt = D.build_prompt(record, style, tokenizer)
        ids = torch.tensor([D.encode(prompt, tokenizer)], device=device)
        with torch.no_grad():
            output = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        text = tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)
        samples.append(
            {
                "id": record.id,
                "task": record.task,
                "instruction": record.instruction,
                "reference": record.output,
                "generated": text,
            }
        )
    return samples
