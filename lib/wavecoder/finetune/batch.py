"""How many rows and examples one optimizer step takes, decided at launch from
`finetune.global_batch_size`, the number of processes and (packed) the examples a row holds."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from wavecoder.config import FinetuneParams
from wavecoder.finetune.data import FinetuneError


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
