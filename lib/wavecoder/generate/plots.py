"""Stage 02 figures, saved as PNG beside the data (see wavecoder.figures for the theme)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from wavecoder.figures import save


def accept_rates(rates: dict[str, dict[str, float]], path: str | Path, title: str, label: str):
    """Horizontal bars of a rate (0..1) per name, with the count behind it."""
    names = list(rates)
    values = [rates[n]["rate"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(names), 1) + 1.4))
    if names:
        sns.barplot(x=values, y=names, ax=ax, color="seagreen", orient="h")
        for i, name in enumerate(names):
            ax.text(
                values[i], i, f" {values[i]:.0%} of {rates[name]['n']}", va="center", fontsize=9
            )
    ax.set_xlim(0, 1.25)
    ax.set_xlabel(label)
    ax.set_ylabel("")
    ax.set_title(title)
    save(fig, path)
    return fig


def histogram(values: dict[str, list[float]], path: str | Path, xlabel: str, title: str):
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for name, vals in values.items():
        if len(vals):
            ax.hist(
                np.asarray(vals, dtype=float), bins=20, alpha=0.55, label=f"{name} (n={len(vals)})"
            )
            drawn = True
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    save(fig, path)
    return fig


def targets_and_rounds(
    targets: list[dict], by_round: list[dict], path: str | Path, title: str = "Targets"
):
    """Left: accepted vs target per task. Right: accept rate per task and round."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    tasks = [row["task"].removeprefix("code_") for row in targets]
    accepted = [row["accepted"] for row in targets]
    wanted = [row["target"] or 0 for row in targets]
    y = np.arange(len(tasks))
    left.barh(y - 0.2, accepted, height=0.4, color="seagreen", label="accepted")
    if any(wanted):
        left.barh(y + 0.2, wanted, height=0.4, color="lightgray", label="target")
    left.set_yticks(y, tasks)
    left.legend()
    left.set_xlabel("cases")
    left.set_title(title)
    for task in sorted({row["task"] for row in by_round}):
        rows = [row for row in by_round if row["task"] == task]
        right.plot(
            [row["round"] for row in rows],
            [row["rate"] for row in rows],
            marker="o",
            label=task.removeprefix("code_"),
        )
    if not by_round:
        right.text(0.5, 0.5, "no data", ha="center", va="center", transform=right.transAxes)
    else:
        right.legend(fontsize=8)
    right.set_ylim(-0.05, 1.05)
    right.set_xlabel("round")
    right.set_ylabel("accept rate")
    right.set_title("Accept rate per task and round")
    save(fig, path)
    return fig
