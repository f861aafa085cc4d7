"""The training loop's parts. The Trainer does the loop; this module adds what it lacks: exact
non-padding token accounting (tokens/s and the padding share, `CountingTrainer`), a held-out
loss that is the same on 1 or N processes, a `train_log.jsonl` that survives a kill and is
trimmed on resume (`TrainLogCallback`), the Trainer's arguments, and a resume guard that
refuses checkpoints of a different configuration (`checkpoint_to_resume`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from wavecoder.config import FinetuneParams, StudyParams
from wavecoder.finetune import collate as C
from wavecoder.finetune import data as D
from wavecoder.finetune.model import use_bf16
from wavecoder.io import sha256_json
from wavecoder.stages import FINETUNE

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
        else "gradient_checkpointing"
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
        output_dir=str(out / FINETUNE.outputs["checkpoints"]),
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


def run_fingerprint(params: StudyParams, records_sha256: str, model_path: Path) -> str:
    """What a checkpoint must match to be resumed: the training params, seed, records, model."""
    ft = {k: v for k, v in params.finetune.model_dump(mode="json").items() if k not in BOOKKEEPING}
    return sha256_json(
        {"finetune": ft, "seed": params.seed, "records": records_sha256, "model": str(model_path)}
    )


def checkpoint_to_resume(
    folder: Path, fingerprint: str, resume: bool, is_main: bool = True
) -> str | None:
    """The last checkpoint of a run with the same fingerprint, or None; the main process clears
    checkpoints of another configuration and marks the folder with this run's fingerprint."""
    from transformers.trainer_utils import get_last_checkpoint

    marker = folder / FINETUNE.outputs["fingerprint"]
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
