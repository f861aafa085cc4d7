"""Batches for causal-LM fine-tuning: dynamic padding, or packing without cross-attention.

Packing puts several examples in one row of at most `max_length` tokens and restarts
`position_ids` at 0 for every example, with no 2-D attention mask. transformers (5.x) then
detects the packed format from the position ids (`masking_utils.find_packed_sequence_indices`)
and builds a block-diagonal causal mask for sdpa/eager, or uses varlen kernels for
flash-attention, so no token attends across an example boundary and positions match an
unpacked run. `DataCollatorWithFlattening` does the same but flattens a whole batch into one
row, whose attention cost grows with the square of the batch's total length on sdpa; a
fixed-length bin packer (first-fit decreasing) keeps rows at `max_length`. TRL has one
(`pack_dataset(strategy="bfd")`) but TRL is not a dependency, hence the few lines here.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from wavecoder.finetune.data import IGNORE_INDEX, Example


@dataclass
class Row:
    """One training row: one example, or several packed."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    n_examples: int = 1

    def __len__(self) -> int:
        return len(self.input_ids)


def single_rows(examples: Sequence[Example]) -> list[Row]:
    return [
        Row(list(e.input_ids), list(e.labels), list(range(len(e.input_ids))), 1) for e in examples
    ]


def pack_examples(examples: Sequence[Example], max_length: int, seed: int = 0) -> list[Row]:
    """First-fit-decreasing bin packing into rows of at most `max_length` tokens.

    Bins are found with a sorted list of remaining capacities (best fit: the fullest bin that
    still has room), O(n log n) plus list inserts. The row order is shuffled with `seed` so that
    training does not see rows sorted by length.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]), i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for index in order:
        size = len(examples[index])
        if size > max_length:
            raise ValueError(
                f"example {index} has {size} tokens, more than max_length {max_length}"
            )
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            remaining, bin_index = free.pop(at)
            bins[bin_index].append(index)
        else:
            bins.append([index])
            remaining, bin_index = max_length, len(bins) - 1
        remaining -= size
        if remaining > 0:
            bisect.insort(free, (remaining, bin_index))
    random.Random(seed).shuffle(bins)
    rows = []
    for members in bins:
        members.sort()  # within a row, keep the data file's order
        row = Row([], [], [], len(members))
        for index in members:
            example = examples[index]
            row.input_ids += example.input_ids
            row.labels += example.labels
            row.position_ids += list(range(len(example)))
        rows.append(row)
    return rows


class RowDataset(Dataset):
    """A list of rows as a torch Dataset (no column filtering by the Trainer needed)."""

    def __init__(self, rows: Sequence[Row]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {
            "input_ids": row.input_ids,
            "labels": row.labels,
            "position_ids": row.position_ids,
        }

    @property
    def lengths(self) -> list[int]:
        return [len(r) for r in self.rows]


@dataclass
class Collator:
    """Pad a list of rows to the longest (rounded up to `pad_to_multiple_of`).

    packed=False: the usual `attention_mask` marks padding.
    packed=True: no attention mask; `position_ids` restart per example, and the padding tail is a
    segment of its own (positions from 0), so real tokens never attend to it.
    Every batch carries `num_real_tokens` (non-padding tokens), which the trainer pops for
    throughput and padding accounting before the forward pass.
    """

    pad_token_id: int
    packed: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            multiple = self.pad_to_multiple_of
            longest = -(-longest // multiple) * multiple
        batch = len(features)
        input_ids = torch.full((batch, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((batch, longest), dtype=torch.long)
        attention = torch.zeros((batch, longest), dtype=torch.long)
        real = 0
        for i, feature in enumerate(features):
            n = len(feature["input_ids"])
            real += n
            input_ids[i, :n] = torch.tensor(feature["input_ids"])
            labels[i, :n] = torch.tensor(feature["labels"])
            position_ids[i, :n] = torch.tensor(feature["position_ids"])
            position_ids[i, n:] = torch.arange(longest - n)
            attention[i, :n] = 1
        out = {"input_ids": input_ids, "labels": labels, "num_real_tokens": torch.tensor(real)}
        if self.packed:
            out["position_ids"] = position_ids
        else:
            out["attention_mask"] = attention
        return out


def non_padding_fraction(
    lengths: Sequence[int], batch_size: int, seed: int = 0, epochs: int = 1
) -> float:
    """Expected share of real tokens when rows are batched in a seeded random order and each
    batch is padded to its longest row (what the Trainer's random sampler and `Collator` do)."""
    if not lengths:
        return 0.0
    real = padded = 0
    rng = random.Random(seed)
    for _ in range(max(1, epochs)):
        order = list(range(len(lengths)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = [lengths[i] for i in order[start : start + batch_size]]
            real += sum(chunk)
            padded += max(chunk) * len(chunk)
    return real / padded
