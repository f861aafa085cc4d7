"""The model side of stage 03: tokenizer and base model loading (with a fresh LoRA adapter),
the dtypes weights are trained and saved in, LoRA target module checks, parameter counts."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from wavecoder import models
from wavecoder.config import FinetuneParams
from wavecoder.finetune.data import FinetuneError


def load_tokenizer(model_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        # Padding is masked out of the loss and attention, so any token serves; EOS is customary.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise FinetuneError(f"the tokenizer of {model_path} has no EOS token")
    return tokenizer


def use_bf16(ft: FinetuneParams) -> bool:
    """bf16 if asked for and the device supports it (CPU autocast does; old GPUs do not)."""
    if not ft.bf16:
        return False
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        print("finetune.bf16: this GPU has no bf16 support; training in float32", file=sys.stderr)
        return False
    return True


def weights_dtype(ft: FinetuneParams) -> torch.dtype:
    if ft.model_dtype != "auto":
        return getattr(torch, ft.model_dtype)
    # LoRA keeps the frozen base in bf16 on a GPU (half the memory); full fine-tuning keeps fp32
    # master weights and lets autocast (or FSDP mixed precision) compute in bf16.
    if ft.method == "lora" and use_bf16(ft) and torch.cuda.is_available():
        return torch.bfloat16
    return torch.float32


def saved_dtype(ft: FinetuneParams, model_path: str | Path) -> torch.dtype:
    """finetune.save_dtype, or ("auto") the base model's own dtype."""
    if ft.save_dtype != "auto":
        return getattr(torch, ft.save_dtype)
    return getattr(torch, models.describe(model_path).get("dtype") or "float32")


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names (last path part) of the Linear layers below the output head."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] != "lm_head":
            names.add(name.split(".")[-1])
    return sorted(names)


def check_target_modules(model: torch.nn.Module, targets: list[str] | str, where: str) -> None:
    """A LoRA target module the model lacks is an error naming it (peft's matching rule: a module
    name equals the target or ends with '.<target>')."""
    if isinstance(targets, str):
        if targets == "all-linear":
            return
        targets = [targets]
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise FinetuneError(
            f"finetune.lora_target_modules: {missing} not found in {where}; its linear layers "
            f"are {linear_module_names(model)} (or use 'all-linear')"
        )


def load_model(model_path: str | Path, ft: FinetuneParams) -> torch.nn.Module:
    """The base model, wrapped with a fresh LoRA adapter when method is lora."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=weights_dtype(ft), attn_implementation=ft.attn_implementation
    )
    model.config.use_cache = False  # a cache would also disable packed-sequence masking
    if ft.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    check_target_modules(model, ft.lora_target_modules, str(model_path))
    config = LoraConfig(
        r=ft.lora_r,
        lora_alpha=ft.lora_alpha,
        lora_dropout=ft.lora_dropout,
        target_modules=ft.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def recast_saved_model(folder: Path, dtype: torch.dtype) -> None:
    """Rewrite a saved model folder's weights in `dtype` (the Trainer saves what it trained:
    fp32 master weights, and under FSDP only after gathering them, so the cast comes after)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    saved = str(getattr(AutoConfig.from_pretrained(folder), "dtype", None))
    if saved.removeprefix("torch.") == str(dtype).removeprefix("torch."):
        return
    staging = folder.with_name(folder.name + ".recast")
    shutil.rmtree(staging, ignore_errors=True)
    AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).save_pretrained(staging)
    old_weights = set(folder.glob("*.safetensors")) | set(folder.glob("*.safetensors.index.json"))
    for new in staging.iterdir():  # new files in first: a crash never leaves model/ empty
        os.replace(new, folder / new.name)  # weights, index, config.json with the dtype
        old_weights.discard(folder / new.name)
    for old in old_weights:  # shards of the old layout the new one does not have
        old.unlink()
    staging.rmdir()
