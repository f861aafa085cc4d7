"""Training figures: loss curves (train and held-out) and throughput, saved as PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wavecoder import figures as _plots  # sets the Agg backend and the seaborn theme

plt = _plots.plt


def read_log(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_curves(log: list[dict[str, Any]], path: str | Path, title: str = "Training loss"):
    train = [e for e in log if e.get("kind") == "train" and e.get("loss") is not None]
    evals = [e for e in log if e.get("kind") == "eval" and e.get("eval_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot([e["step"] for e in train], [e["loss"] for e in train], label="train", lw=1.5)
    if evals:
        ax.plot(
            [e["step"] for e in evals],
            [e["eval_loss"] for e in evals],
            "o-",
            label="held-out",
            lw=2,
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (response tokens)")
    ax.set_title(title)
    ax.legend()
    _plots.save(fig, path)
    return fig


def throughput(log: list[dict[str, Any]], path: str | Path):
    train = [e for e in log if e.get("kind") == "train" and e.get("tokens_per_s")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = [e["step"] for e in train]
    axes[0].plot(steps, [e["tokens_per_s"] for e in train], lw=1.5)
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("non-padding tokens / s")
    axes[0].set_title("Throughput")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(steps, [e.get("learning_rate", 0) for e in train], lw=1.5, color="darkorange")
    axes[1].set_xlabel("optimizer step")
    axes[1].set_ylabel("learning rate")
    axes[1].set_title("Schedule")
    _plots.save(fig, path)
    return fig
