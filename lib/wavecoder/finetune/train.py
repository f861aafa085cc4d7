"""Stage 03 training: transformers Trainer + peft LoRA (or full fine-tuning).

One entry point for the notebook (`finetune(...)`) and the command line, which also runs under
`accelerate launch` (DDP for LoRA, FSDP for full fine-tuning; configs in params/accelerate/):

    python -m wavecoder.finetune.train --params params/default.yaml \\
        --out outputs/default/03_finetune
    accelerate launch --config_file params/accelerate/fsdp_full.yaml -m wavecoder.finetune.train \\
        --params params/paper.yaml --out outputs/paper/03_finetune

Layout of `out`: `adapter/` (LoRA) or `model/` (full), optional `merged/`, `checkpoints/` (while
training; resumed after a kill), `train_log.jsonl`, `loss.png`, `throughput.png`,
`model_info.json` (what stage 04 loads), `train_metrics.json`.

The Trainer does the loop; this module adds what it lacks: checking the inputs before anything
heavy starts, exact non-padding token accounting (for tokens/s and the padding share), a JSONL
log that survives a kill and is trimmed on resume, a resume guard that refuses checkpoints of
a different configuration, and the model card.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from wavecoder import models
from wavecoder.config import FinetuneParams, StudyParams, load_params
from wavecoder.finetune import collate as C
from wavecoder.finetune import data as D
from wavecoder.io import sha256_json

ADAPTER_DIR = "adapter"
FULL_MODEL_DIR = "model"
MERGED_DIR = "merged"
CHECKPOINT_DIR = "checkpoints"
TRAIN_LOG = "train_log.jsonl"
MODEL_INFO = "model_info.json"
FINGERPRINT = "fingerprint.json"
# how long the other processes wait at a barrier: rank 0 may be downloading a 13.5 GB model
# (or converting a GGUF) inside `main_process_first` meanwhile
DDP_TIMEOUT_S = 3 * 3600
# finetune fields that do not change what is trained (a checkpoint stays valid across them)
BOOKKEEPING = {
    "logging_steps",
    "keep_checkpoints",
    "resume",
    "sample_prompts",
    "sample_max_new_tokens",
    "merge_adapter",
    "save_dtype",
    "save_total_limit",
    "torch_threads",
    "model_cache",
}


class FinetuneError(ValueError):
    """Bad stage 03 input (data file, model, target modules); raised before training starts."""


# ---------------------------------------------------------------- data


@dataclass
class PreparedData:
    data_path: Path
    train_records: list[D.Record]
    val_records: list[D.Record]
    train_rows: list[C.Row]
    val_rows: list[C.Row]
    train_stats: D.TokenizeStats
    val_stats: D.TokenizeStats
    data_sha256: str
    records_sha256: str
    packed: bool
    expected_non_padding: float
    mixed_in: int = 0

    @property
    def train_tokens(self) -> int:
        return sum(len(r) for r in self.train_rows)

    @property
    def train_examples(self) -> int:
        """Examples in the training rows (after dropping overlong ones)."""
        return sum(r.n_examples for r in self.train_rows)

    def summary_rows(self) -> list[dict[str, str]]:
        """A two-column table for the notebook."""
        tok = self.train_stats
        return [
            {"": "records (train / held-out)", "value": f"{len(self.train_records)} / "
             f"{len(self.val_records)}"},
            {"": "mixed in from another set", "value": str(self.mixed_in)},
            {"": "truncated / dropped (train)", "value": f"{tok.truncated} / {tok.dropped}"},
            {"": "tokens: prompt / response (train)",
             "value": f"{tok.prompt_tokens:,} / {tok.response_tokens:,}"},
            {"": "rows" + (" (packed)" if self.packed else ""),
             "value": f"{len(self.train_rows)} ({self.train_tokens:,} tokens)"},
            {"": "expected non-padding fraction", "value": f"{self.expected_non_padding:.3f}"},
        ]  # fmt: skip

    def metrics(self) -> dict[str, Any]:
        return {
            "data_file": str(self.data_path),
            "data_sha256": self.data_sha256,
            "records_sha256": self.records_sha256,
            "train_records": len(self.train_records),
            "validation_records": len(self.val_records),
            "mixed_in": self.mixed_in,
            "train_rows": len(self.train_rows),
            "validation_rows": len(self.val_rows),
            "train_tokens": self.train_tokens,
            "packing": self.packed,
            "expected_non_padding_fraction": round(self.expected_non_padding, 4),
            "train_tokenize": self.train_stats.as_metrics(),
            "validation_tokenize": self.val_stats.as_metrics(),
            "composition": D.composition(self.train_records),
        }


def default_data_path(params: StudyParams, out: str | Path) -> Path:
    """finetune.data_file, or stage 02's codeocean.jsonl beside this stage's folder."""
    if params.finetune.data_file:
        return params.resolve_path(params.finetune.data_file)
    return Path(out).resolve().parent / "02_generate" / "codeocean.jsonl"


def read_instructions(data_path: str | Path) -> list[D.Record]:
    """The training records, with a hint when stage 02's output is simply not there yet."""
    data_path = Path(data_path)
    if not data_path.exists() and data_path.parent.name == "02_generate":
        raise D.DataError(
            f"instruction file not found: {data_path}; run stage 02 first "
            "(wavecoder run PARAMS --stages 02) or set finetune.data_file"
        )
    return D.load_records(data_path)


def prepare_data(
    params: StudyParams, tokenizer: Any, data_path: str | Path, progress: bool = True
) -> PreparedData:
    """Read, check, mix, split, tokenize and (optionally) pack the instruction data."""
    ft = params.finetune
    data_path = Path(data_path)
    if ft.mix_with and data_path.exists() and not data_path.read_text(encoding="utf-8").strip():
        records = []  # nothing accepted upstream: the mix alone (the smoke preset's case)
    else:
        records = read_instructions(data_path)
    main_count = len(records)
    if ft.mix_with:
        extra = D.load_mix(ft.mix_with, ft.mix_split, Path(params.base_dir or "."))
        records = D.mix_records(records, extra, ft.mix_max_examples, params.seed)
    train_records, val_records = D.split_validation(
        records, ft.validation_fraction, params.seed, ft.validation_max
    )
    common = dict(
        tokenizer=tokenizer,
        max_length=ft.max_seq_length,
        style=ft.prompt,
        overlong=ft.overlong,
        min_response_tokens=ft.min_response_tokens,
        progress=progress,
    )
    train_examples, train_stats = D.tokenize_records(train_records, **common)
    val_examples, val_stats = D.tokenize_records(val_records, **common)
    if not train_examples:
        raise FinetuneError(
            f"{data_path}: all {len(train_records)} training examples are longer than "
            f"finetune.max_seq_length={ft.max_seq_length} and were dropped; raise max_seq_length"
        )
    if ft.packing:
        train_rows = C.pack_examples(train_examples, ft.max_seq_length, params.seed)
        val_rows = C.pack_examples(val_examples, ft.max_seq_length, params.seed)
    else:
        train_rows, val_rows = C.single_rows(train_examples), C.single_rows(val_examples)
    expected = C.non_padding_fraction(
        [len(r) for r in train_rows], ft.batch_size, params.seed, epochs=1
    )
    return PreparedData(
        data_path=data_path,
        train_records=train_records,
        val_records=val_records,
        train_rows=train_rows,
        val_rows=val_rows,
        train_stats=train_stats,
        val_stats=val_stats,
        data_sha256=D.data_sha256(data_path),
        records_sha256=D.records_sha256(records),
        packed=ft.packing,
        expected_non_padding=expected,
        mixed_in=len(records) - main_count,
    )


# ---------------------------------------------------------------- batch


@dataclass
class BatchPlan:
    """How many rows and examples one optimizer step takes, decided at launch.

    `finetune.global_batch_size` counts examples (as the paper's 512 and 256 do). Without
    packing a row is one example, so the accumulation is global / (batch_size x processes) and
    must divide exactly. With packing a row holds `examples_per_row` examples on average, so the
    accumulation is the whole number of micro-batches whose mean examples per step over an epoch,
    train_examples / steps_per_epoch, comes nearest the asked number (at least 1, at most the
    micro-batches of one epoch); `examples_per_step` records what was achieved. Without
    `global_batch_size`, batch_size x gradient_accumulation rows as before.
    """

    global_batch_size: int | None  # asked, in examples; None = not set
    batch_size: int  # rows per device per micro-batch
    processes: int
    gradient_accumulation: int
    packed: bool
    train_examples: int
    train_rows: int
    micro_batches_per_epoch: int  # per process
    steps_per_epoch: int

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.processes * self.gradient_accumulation

    @property
    def examples_per_row(self) -> float:
        return self.train_examples / self.train_rows if self.train_rows else 0.0

    @property
    def examples_per_step(self) -> float:
        """Mean over an epoch (the last step of an epoch may be short)."""
        return self.train_examples / self.steps_per_epoch if self.steps_per_epoch else 0.0

    def as_metrics(self) -> dict[str, Any]:
        return {
            "global_batch_size": self.global_batch_size,
            "unit": "examples",
            "batch_size": self.batch_size,
            "processes": self.processes,
            "gradient_accumulation": self.gradient_accumulation,
            "rows_per_step": self.rows_per_step,
            "packing": self.packed,
            "examples_per_row": round(self.examples_per_row, 4),
            "examples_per_step": round(self.examples_per_step, 2),
            "steps_per_epoch": self.steps_per_epoch,
        }

    def describe(self) -> str:
        asked = (
            f"global batch {self.global_batch_size} examples"
            if self.global_batch_size
            else "no global_batch_size"
        )
        rows = (
            f"{self.batch_size} rows x {self.processes} process"
            f"{'es' if self.processes > 1 else ''} x {self.gradient_accumulation} accumulation "
            f"= {self.rows_per_step} rows a step"
        )
        per_row = f", {self.examples_per_row:.2f} examples a row (packed)" if self.packed else ""
        return (
            f"{asked}: {rows}{per_row}; {self.steps_per_epoch} steps an epoch, "
            f"{self.examples_per_step:.1f} examples a step on average"
        )


def launch_world_size() -> int:
    """Processes taking part in training: torch.distributed's world when it is up, else the
    WORLD_SIZE that torchrun / `accelerate launch` set, else 1."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def plan_batch(
    ft: FinetuneParams, processes: int, train_examples: int, train_rows: int, packed: bool
) -> BatchPlan:
    """The gradient accumulation for `finetune.global_batch_size` on `processes` (see
    `BatchPlan`); FinetuneError when, unpacked, the global batch is not a multiple of
    batch_size x processes."""
    per_pass = ft.batch_size * processes
    micro = max(math.ceil(train_rows / per_pass), 1)  # per process, as accelerate shards them
    asked = ft.global_batch_size
    if asked is None:
        accumulation = ft.gradient_accumulation
    elif not packed:
        if asked % per_pass:
            lower = max(asked // per_pass, 1) * per_pass
            raise FinetuneError(
                f"finetune.global_batch_size={asked} is not a multiple of finetune.batch_size="
                f"{ft.batch_size} x {processes} process{'es' if processes > 1 else ''} "
                f"(= {per_pass} examples a micro-batch); use e.g. {lower} or {lower + per_pass}, "
                "or change batch_size or the number of processes"
            )
        accumulation = asked // per_pass
    else:
        target = asked * train_rows / (train_examples * per_pass) if train_examples else 1.0

        def error(a: int) -> float:  # mean examples a step over an epoch, from the asked
            return abs(train_examples / math.ceil(micro / a) - asked)

        candidates = {min(max(math.floor(target), 1), micro), min(max(math.ceil(target), 1), micro)}
        accumulation = min(sorted(candidates), key=error)
    steps = max(math.ceil(micro / accumulation), 1)
    return BatchPlan(
        global_batch_size=asked,
        batch_size=ft.batch_size,
        processes=processes,
        gradient_accumulation=accumulation,
        packed=packed,
        train_examples=train_examples,
        train_rows=train_rows,
        micro_batches_per_epoch=micro,
        steps_per_epoch=steps,
    )


# ---------------------------------------------------------------- model


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


# ---------------------------------------------------------------- trainer pieces


@dataclass
class TokenCounter:
    """Non-padding and padded tokens seen in this process's session (all ranks, gathered)."""

    real: int = 0
    padded: int = 0

    @property
    def non_padding_fraction(self) -> float:
        return self.real / self.padded if self.padded else 0.0


class CountingTrainer(Trainer):
    """Trainer that pops the collator's `num_real_tokens` and counts real and padded tokens.

    The count feeds `state.num_input_tokens_seen` (saved in checkpoints) and the callback's
    tokens/s; the Trainer's own counter can only count attention-mask ones, and packed batches
    carry no attention mask.
    """

    def __init__(self, *args: Any, counter: TokenCounter | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.counter = counter or TokenCounter()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        real = inputs.pop("num_real_tokens", None)
        if real is not None and model.training:
            pair = torch.stack([real.reshape(()), torch.tensor(inputs["input_ids"].numel())])
            pair = pair.to(self.args.device)
            if self.args.world_size > 1:
                pair = self.accelerator.gather(pair.unsqueeze(0)).sum(0)
            real_n, padded_n = (int(v) for v in pair.tolist())
            self.counter.real += real_n
            self.counter.padded += padded_n
            self.state.num_input_tokens_seen += real_n
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Held-out loss: the summed negative log-likelihood of every response token over their
        number, across all processes; the same figure on 1 or N processes.

        Why not the Trainer's loop: it averages per-batch means, and under several processes
        (transformers 5.24) it repeats rows to even out the shards, scales each rank's loss by
        its share of the tokens, then keeps rank 0's copies: on 2 CPU processes it reported
        12.11 where the model's loss on those rows was 10.785 (DDP and FSDP alike).
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict) or (
            self.is_fsdp_enabled and not getattr(self.accelerator, "_models", True)
        ):
            # several named sets, or an FSDP model not yet prepared: not what the stage does
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        started = time.perf_counter()
        totals = held_out_nll(
            self.model_wrapped,
            dataset,
            self.data_collator,
            self.args.per_device_eval_batch_size,
            self.args.process_index,
            self.args.world_size,
            self.args.device,
            self.compute_loss_context_manager,
        )
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        nll, tokens = (float(v) for v in totals.tolist())
        metrics = {
            f"{metric_key_prefix}_loss": nll / tokens if tokens else float("nan"),
            f"{metric_key_prefix}_tokens": int(tokens),
            f"{metric_key_prefix}_runtime": round(time.perf_counter() - started, 4),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics


@torch.no_grad()
def held_out_nll(
    model: torch.nn.Module,
    dataset: C.RowDataset,
    collator: C.Collator,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
    context: Any = contextlib.nullcontext,
) -> torch.Tensor:
    """(summed NLL of the labelled tokens, their count) over this process's rows: every
    `world_size`-th row from `rank`, no row twice. Every process runs the same number of
    forward passes (a batch whose labels are all masked fills in), since FSDP's forward and
    DDP's buffer broadcast are collective."""
    rows = list(range(rank, len(dataset), world_size))
    steps = math.ceil(math.ceil(len(dataset) / world_size) / batch_size)
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for step in range(steps):
        chosen = rows[step * batch_size : (step + 1) * batch_size]
        features = [dataset[i] for i in chosen]
        if not features:  # filler: any row, nothing labelled
            filler = dict(dataset[0])
            filler["labels"] = [D.IGNORE_INDEX] * len(filler["labels"])
            features = [filler]
        batch = collator(features)
        batch.pop("num_real_tokens", None)
        labels = batch.pop("labels").to(device)
        with context():
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        # token t predicts label t+1 (the model's own loss shifts the same way); shifting the
        # labels rather than slicing the logits saves a copy of the logits
        targets = torch.nn.functional.pad(labels, (0, 1), value=D.IGNORE_INDEX)[:, 1:]
        totals[0] += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(),
            targets.flatten(),
            ignore_index=D.IGNORE_INDEX,
            reduction="sum",
        ).double()
        totals[1] += (targets != D.IGNORE_INDEX).sum()
    model.train(was_training)
    return totals


def sync_device() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class TrainLogCallback(TrainerCallback):
    """Appends one JSON line per log event to train_log.jsonl (flushed each time, so a kill
    loses nothing logged), with tokens/s over training time only (evaluation and checkpoint
    saving excluded), and trims entries past the resumed step when training resumes."""

    def __init__(self, path: str | Path, counter: TokenCounter, is_main: bool = True):
        self.path = Path(path)
        self.counter = counter
        self.is_main = is_main
        self.step_seconds: list[float] = []
        self.step_tokens: list[int] = []
        self._mark = 0.0
        self._tokens_at_mark = 0
        self._since_log_seconds = 0.0
        self._since_log_tokens = 0
        self.resumed_from: int | None = None

    def _write(self, entry: dict[str, Any]) -> None:
        if not self.is_main:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()

    def on_train_begin(self, args, state, control, **kwargs):
        if self.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if state.global_step > 0 and self.path.exists():
                self.resumed_from = state.global_step
                for line in self.path.read_text().splitlines():
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by the kill
                    if entry.get("step", 0) <= state.global_step and entry.get("kind") != "summary":
                        kept.append(line)
            elif state.global_step > 0:
                self.resumed_from = state.global_step
            self.path.write_text("".join(line + "\n" for line in kept))
            if self.resumed_from is not None:
                self._write({"kind": "resume", "step": state.global_step, "time": time.time()})
        self._mark = time.perf_counter()
        self._tokens_at_mark = self.counter.real

    def on_step_end(self, args, state, control, **kwargs):
        sync_device()  # GPU work is asynchronous: time the step, not its queueing
        now = time.perf_counter()
        seconds, tokens = now - self._mark, self.counter.real - self._tokens_at_mark
        self.step_seconds.append(seconds)
        self.step_tokens.append(tokens)
        self._since_log_seconds += seconds
        self._since_log_tokens += tokens
        self._mark, self._tokens_at_mark = now, self.counter.real

    def _restart_clock(self) -> None:
        # what follows a step's end inside the Trainer (log, evaluate, save) is not training time
        self._mark = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        entry: dict[str, Any] = {
            "step": state.global_step,
            "epoch": state.epoch,
            "time": time.time(),
        }
        if "eval_loss" in logs:
            entry["kind"] = "eval"
            entry.update({k: v for k, v in logs.items() if k.startswith("eval_")})
        elif "train_runtime" in logs:
            entry["kind"] = "summary"
            entry.update(logs)
            entry["non_padding_fraction"] = self.counter.non_padding_fraction
        else:
            entry["kind"] = "train"
            for key in ("loss", "learning_rate", "grad_norm"):
                if key in logs:
                    entry[key] = logs[key]
            if self._since_log_seconds > 0:
                entry["tokens_per_s"] = self._since_log_tokens / self._since_log_seconds
            entry["tokens_seen"] = state.num_input_tokens_seen
            self._since_log_seconds = 0.0
            self._since_log_tokens = 0
        self._write(entry)
        self._restart_clock()

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart_clock()

    def on_save(self, args, state, control, **kwargs):
        self._restart_clock()

    def steady_tokens_per_s(self, skip: int = 1) -> float:
        """Tokens/s over the steps after the first `skip` (warm-up) ones."""
        seconds = sum(self.step_seconds[skip:])
        return sum(self.step_tokens[skip:]) / seconds if seconds > 0 else 0.0


class StopAtStep(TrainerCallback):
    """Stops training after `step` optimizer steps (for tests and the benchmark)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def _steps_value(value: float) -> float | int:
    return value if value < 1 else int(value)


def checkpointing_arguments(enabled: bool) -> dict[str, Any]:
    """Gradient (activation) checkpointing, under the name this transformers version uses
    (5.24 renamed `gradient_checkpointing` to `activation_checkpointing`; 5.17 has the old one)."""
    fields = TrainingArguments.__dataclass_fields__
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else ("gradient_checkpointing")
    )
    # non-reentrant checkpointing needs no `enable_input_require_grads` with a frozen LoRA base
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def training_arguments(
    ft: FinetuneParams,
    out: Path,
    seed: int,
    has_eval: bool,
    progress: bool = True,
    gradient_accumulation: int | None = None,
) -> TrainingArguments:
    """The Trainer's arguments; `gradient_accumulation` (from `plan_batch`) replaces
    finetune.gradient_accumulation when given."""
    bf16 = use_bf16(ft)
    return TrainingArguments(
        output_dir=str(out / CHECKPOINT_DIR),
        per_device_train_batch_size=ft.batch_size,
        per_device_eval_batch_size=ft.eval_batch_size or ft.batch_size,
        gradient_accumulation_steps=gradient_accumulation or ft.gradient_accumulation,
        num_train_epochs=ft.epochs,
        max_steps=ft.max_steps or -1,
        learning_rate=ft.learning_rate,
        lr_scheduler_type=ft.lr_scheduler,
        # an int counts steps; a float < 1 is a fraction of the total steps
        warmup_steps=ft.warmup_steps if ft.warmup_steps is not None else ft.warmup_ratio,
        weight_decay=ft.weight_decay,
        max_grad_norm=ft.max_grad_norm,
        optim="adafactor" if ft.optimizer == "adafactor" else "adamw_torch",
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        **checkpointing_arguments(ft.gradient_checkpointing),
        logging_steps=ft.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=_steps_value(ft.eval_steps) if has_eval else None,
        eval_on_start=has_eval,
        prediction_loss_only=True,
        save_strategy="steps",
        save_steps=_steps_value(ft.save_steps),
        save_total_limit=ft.save_total_limit,
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=not progress,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        ddp_timeout=DDP_TIMEOUT_S,
        include_num_input_tokens_seen="no",  # CountingTrainer counts non-padding tokens itself
    )


def run_fingerprint(params: StudyParams, prepared: PreparedData, model_path: Path) -> str:
    ft = {k: v for k, v in params.finetune.model_dump(mode="json").items() if k not in BOOKKEEPING}
    return sha256_json(
        {
            "finetune": ft,
            "seed": params.seed,
            "records": prepared.records_sha256,
            "model": str(model_path),
        }
    )


def checkpoint_to_resume(
    folder: Path, fingerprint: str, resume: bool, is_main: bool = True
) -> str | None:
    """The last checkpoint of a run with the same fingerprint, or None; the main process clears
    checkpoints of another configuration and marks the folder with this run's fingerprint."""
    from transformers.trainer_utils import get_last_checkpoint

    marker = folder / FINGERPRINT
    same = marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fingerprint
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if resume and same and last:
        return last
    if is_main:
        if last:
            why = "resume is off" if not resume else "params or data changed"
            print(f"removing old checkpoints in {folder} ({why})", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": fingerprint}))
    return None


def main_process_first():
    """Under `accelerate launch`/torchrun, let rank 0 go first (model download or GGUF
    conversion, checkpoint folder) while the others wait; a no-op in a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        # the process group starts here, before TrainingArguments: give it the same timeout
        state = PartialState(
            cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=DDP_TIMEOUT_S)
        )
        return state.main_process_first()
    return contextlib.nullcontext()


# ---------------------------------------------------------------- the run


@dataclass
class FinetuneResult:
    out_dir: str
    method: str
    base_model: str
    base_model_path: str
    adapter_path: str | None
    model_path: str | None
    merged_path: str | None
    global_step: int
    resumed_from: int | None
    first_loss: float | None
    last_loss: float | None
    first_eval_loss: float | None
    last_eval_loss: float | None
    tokens_per_s: float
    non_padding_fraction: float
    train_seconds: float
    parameters: dict[str, int]
    data: dict[str, Any] = field(default_factory=dict)
    # how it ran: 'NO' (one process), 'MULTI_GPU'/'MULTI_CPU' (DDP) or 'FSDP', on how many
    distributed: str = "NO"
    processes: int = 1
    # the optimizer step as planned and achieved (BatchPlan.as_metrics)
    batch: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> str:
        loss = (
            f"loss {self.first_loss:.3f} -> {self.last_loss:.3f}"
            if self.first_loss is not None and self.last_loss is not None
            else "loss n/a"
        )
        held = (
            f", held-out {self.first_eval_loss:.3f} -> {self.last_eval_loss:.3f}"
            if self.first_eval_loss is not None and self.last_eval_loss is not None
            else ""
        )
        return (
            f"{self.method} on {self.data.get('train_records', '?')} examples, "
            f"{self.global_step} steps: {loss}{held}; {self.tokens_per_s:,.0f} tok/s"
        )


def _loss_ends(log: list[dict[str, Any]], kind: str, key: str) -> tuple[float | None, float | None]:
    values = [e[key] for e in log if e.get("kind") == kind and e.get(key) is not None]
    return (values[0], values[-1]) if values else (None, None)


def finetune(
    params: StudyParams,
    out: str | Path,
    data_path: str | Path | None = None,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
    prepared: PreparedData | None = None,
) -> FinetuneResult:
    """Train as params say; write adapter/model, logs, plots, model card and model_info.json.

    Checks run before anything heavy: the data file (missing, empty, malformed line), the base
    model (path or id), the LoRA target modules. Resumes from `out/checkpoints/` when the last
    run with the same params and data was interrupted.
    """
    from transformers import set_seed

    ft = params.finetune
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if ft.torch_threads:
        torch.set_num_threads(ft.torch_threads)
    data_path = Path(data_path) if data_path else default_data_path(params, out)
    if prepared is None:
        # cheap checks first: the data file, before the model is converted or loaded
        read_instructions(data_path)
    try:
        with main_process_first():
            model_path = models.resolve_base_model(
                ft.base_model, params.resolve_path(ft.model_cache)
            )
    except models.ModelResolutionError as exc:
        raise FinetuneError(f"finetune.base_model: {exc}") from None
    tokenizer = load_tokenizer(model_path)
    if prepared is None:
        prepared = prepare_data(params, tokenizer, data_path, progress)
    has_eval = bool(prepared.val_rows)
    plan = plan_batch(
        ft, launch_world_size(), prepared.train_examples, len(prepared.train_rows), prepared.packed
    )
    args = training_arguments(
        ft, out, params.seed, has_eval, progress, gradient_accumulation=plan.gradient_accumulation
    )
    if args.world_size != plan.processes:
        raise FinetuneError(
            f"the batch was planned for {plan.processes} processes (WORLD_SIZE) but the Trainer "
            f"runs on {args.world_size}"
        )
    if args.process_index == 0:
        print(f"finetune: {plan.describe()}", file=sys.stderr)
    set_seed(params.seed)
    model = load_model(model_path, ft)
    counts = parameter_counts(model)

    fingerprint = run_fingerprint(params, prepared, model_path)
    checkpoints = out / CHECKPOINT_DIR
    with args.main_process_first(desc="checkpoint folder"):
        resume_from = checkpoint_to_resume(
            checkpoints, fingerprint, ft.resume, is_main=args.process_index == 0
        )
    counter = TokenCounter()
    logger = TrainLogCallback(out / TRAIN_LOG, counter, is_main=args.process_index == 0)
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=C.RowDataset(prepared.train_rows),
        eval_dataset=C.RowDataset(prepared.val_rows) if has_eval else None,
        data_collator=C.Collator(tokenizer.pad_token_id, packed=prepared.packed),
        processing_class=tokenizer,
        callbacks=[logger, *callbacks],
        counter=counter,
    )
    tick = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - tick

    result_paths = save_outputs(trainer, tokenizer, params, prepared, model_path, out, plan)
    log = read_log(out / TRAIN_LOG)
    first_loss, last_loss = _loss_ends(log, "train", "loss")
    first_eval, last_eval = _loss_ends(log, "eval", "eval_loss")
    result = FinetuneResult(
        out_dir=str(out),
        method=ft.method,
        base_model=ft.base_model,
        base_model_path=str(model_path),
        global_step=trainer.state.global_step,
        resumed_from=logger.resumed_from,
        first_loss=first_loss,
        last_loss=last_loss,
        first_eval_loss=first_eval,
        last_eval_loss=last_eval,
        tokens_per_s=logger.steady_tokens_per_s(skip=1 if len(logger.step_seconds) > 1 else 0),
        non_padding_fraction=counter.non_padding_fraction,
        train_seconds=seconds,
        parameters=counts,
        distributed=trainer.accelerator.distributed_type.value,
        processes=args.world_size,
        data=prepared.metrics(),
        batch=plan.as_metrics(),
        **result_paths,
    )
    if args.process_index == 0:
        (out / "train_metrics.json").write_text(json.dumps(asdict(result), indent=2))
        write_model_card(result, params, out)
        if not ft.keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def read_log(path: Path) -> list[dict[str, Any]]:
    from wavecoder.finetune.plots import read_log as _read

    return _read(path)


def save_outputs(
    trainer: Trainer,
    tokenizer: Any,
    params: StudyParams,
    prepared: PreparedData,
    model_path: Path,
    out: Path,
    plan: BatchPlan | None = None,
) -> dict[str, str | None]:
    """Save the adapter (or the full model), optionally the merged model, and model_info.json."""
    ft = params.finetune
    paths: dict[str, str | None] = {"adapter_path": None, "model_path": None, "merged_path": None}
    if ft.method == "lora":
        target = out / ADAPTER_DIR
        trainer.save_model(str(target))
        paths["adapter_path"] = str(target.resolve())
    else:
        target = out / FULL_MODEL_DIR
        trainer.save_model(str(target))
        paths["model_path"] = str(target.resolve())
    if trainer.args.process_index != 0:
        return paths
    tokenizer.save_pretrained(target)
    dtype = saved_dtype(ft, model_path)
    if ft.method == "full":
        recast_saved_model(target, dtype)
    if ft.method == "lora" and ft.merge_adapter:
        merged_dir = out / MERGED_DIR
        merged = trainer.model.merge_and_unload()
        merged.to(dtype).save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        paths["merged_path"] = str(merged_dir.resolve())
    info = {
        "method": ft.method,
        "base_model": ft.base_model,
        "base_model_path": str(Path(model_path).resolve()),
        **paths,
        "load_path": paths["merged_path"] or paths["model_path"],
        "prompt": ft.prompt,
        "max_seq_length": ft.max_seq_length,
        "data_sha256": prepared.data_sha256,
        "global_step": trainer.state.global_step,
        "optimizer": ft.optimizer,
        "batch": plan.as_metrics() if plan else None,
    }
    (out / MODEL_INFO).write_text(json.dumps(info, indent=2))
    return paths


def saved_dtype(ft: FinetuneParams, model_path: str | Path) -> torch.dtype:
    if ft.save_dtype != "auto":
        return getattr(torch, ft.save_dtype)
    return getattr(torch, models.describe(model_path).get("dtype") or "float32")


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


def batch_line(batch: dict[str, Any]) -> str:
    if not batch:
        return "n/a"
    rows = f"{batch['rows_per_step']} rows a step"
    if not batch.get("global_batch_size"):
        return rows
    return (
        f"{batch['examples_per_step']} examples a step on average (asked "
        f"{batch['global_batch_size']}), {rows}"
    )


def write_model_card(result: FinetuneResult, params: StudyParams, out: Path) -> Path:
    """README.md with the params, the data hash and the results, in each saved model folder."""
    import yaml

    ft = params.finetune.model_dump(mode="json")
    data = result.data
    folder = result.adapter_path or result.model_path
    lines = [
        "---",
        yaml.safe_dump(
            {
                "base_model": result.base_model,
                "library_name": "peft" if result.method == "lora" else "transformers",
                "tags": ["wavecoder", "codeocean", "instruction-tuning", result.method],
            },
            sort_keys=False,
        ).strip(),
        "---",
        "",
        f"# WaveCoder-style instruction tune of `{result.base_model}` ({result.method})",
        "",
        "Trained by stage 03 of the WaveCoder study on CodeOcean-style instruction data "
        "(Alpaca prompt, loss on the response only).",
        "",
        "## Data",
        "",
        f"- file: `{data.get('data_file')}`",
        f"- sha256: `{data.get('data_sha256')}`",
        f"- records hash (after mixing): `{data.get('records_sha256')}`",
        f"- training / held-out records: {data.get('train_records')} / "
        f"{data.get('validation_records')} (mixed in: {data.get('mixed_in')})",
        f"- truncated / dropped (train): {data.get('train_tokenize', {}).get('truncated')} / "
        f"{data.get('train_tokenize', {}).get('dropped')}",
        f"- packing: {data.get('packing')}; non-padding fraction {result.non_padding_fraction:.3f}",
        "",
        "## Results",
        "",
        f"- optimizer steps: {result.global_step}"
        + (f" (resumed from step {result.resumed_from})" if result.resumed_from else ""),
        f"- train loss: {result.first_loss} -> {result.last_loss}",
        f"- held-out loss: {result.first_eval_loss} -> {result.last_eval_loss}",
        f"- throughput: {result.tokens_per_s:,.0f} non-padding tokens/s "
        f"({result.processes} process{'es' if result.processes > 1 else ''}, "
        f"distributed: {result.distributed})",
        f"- parameters: {result.parameters['trainable']:,} trainable of "
        f"{result.parameters['total']:,}",
        f"- optimizer: {params.finetune.optimizer}; batch: {batch_line(result.batch)}",
        "",
        "## Params (`finetune` section, seed " + str(params.seed) + ")",
        "",
        "```yaml",
        yaml.safe_dump(ft, sort_keys=True).strip(),
        "```",
        "",
        "## Load",
        "",
        "```python",
    ]
    if result.method == "lora":
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'base = AutoModelForCausalLM.from_pretrained("{result.base_model_path}")',
            f'model = PeftModel.from_pretrained(base, "{result.adapter_path}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{result.adapter_path}")',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'model = AutoModelForCausalLM.from_pretrained("{result.model_path}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{result.model_path}")',
        ]
    lines += ["```", ""]
    text = "\n".join(lines)
    written = []
    for target in [folder, result.merged_path]:
        if target:
            path = Path(target) / "README.md"
            path.write_text(text)
            written.append(path)
    return written[0] if written else out


# ---------------------------------------------------------------- using the result


def load_tuned(
    out: str | Path, dtype: torch.dtype = torch.float32, prefer_merged: bool = True
) -> tuple[Any, Any]:
    """(model, tokenizer) from a stage 03 folder's model_info.json: the merged or fully tuned
    model when there is one (and `prefer_merged`), else the adapter on its base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = json.loads((Path(out) / MODEL_INFO).read_text())
    path = info.get("model_path") or (info.get("merged_path") if prefer_merged else None)
    if path:
        return (
            AutoModelForCausalLM.from_pretrained(path, dtype=dtype),
            AutoTokenizer.from_pretrained(path),
        )
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(info["base_model_path"], dtype=dtype)
    model = PeftModel.from_pretrained(base, info["adapter_path"])
    return model, AutoTokenizer.from_pretrained(info["adapter_path"])


@torch.no_grad()
def generate_samples(
    model: Any,
    tokenizer: Any,
    records: Sequence[D.Record],
    style: str = "alpaca",
    max_new_tokens: int = 96,
) -> list[dict[str, str]]:
    """Greedy answers of `model` to the records' prompts (one at a time: no padding effects)."""
    model.eval()
    device = next(model.parameters()).device
    samples = []
    for record in records:
        prompt = D.build_prompt(record, style, tokenizer)
        ids = torch.tensor([D.encode(prompt, tokenizer)], device=device)
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


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wavecoder.finetune.train",
        description="Stage 03 training (also under `accelerate launch`).",
    )
    parser.add_argument("--params", required=True, help="params YAML (e.g. params/paper.yaml)")
    parser.add_argument("--out", required=True, help="stage folder, e.g. outputs/paper/03_finetune")
    parser.add_argument(
        "--data", help="instruction file; default: finetune.data_file or stage 02's"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    params = load_params(args.params, args.set)
    try:
        result = finetune(params, args.out, args.data, progress=not args.no_progress)
    except (FinetuneError, D.DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.headline())
        if math.isnan(result.last_loss or 0.0):
            print("warning: the loss is NaN", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
