"""Stage 05 figure: our pass@1 beside the paper's, per benchmark (the comparison table drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wavecoder.figures import plt, save, sns

# what each bar is, in the order drawn: (key in a comparison row, legend label)
SERIES = (
    ("base", "ours, base"),
    ("tuned", "ours, tuned"),
    ("paper_base", "paper, base"),
    ("paper_tuned", "paper, tuned"),
)


def bars_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One bar per (benchmark, series) with a value: our scores always, the paper's only when
    the run's base model has a paper row (never another model's numbers)."""
    series = SERIES if result.get("paper_model") else SERIES[:2]
    return [
        {"benchmark": row["benchmark"], "series": label, "pass@1 (%)": row[key]}
        for row in result.get("rows") or []
        for key, label in series
        if row.get(key) is not None
    ]


def ours_vs_paper(result: dict[str, Any], path: str | Path, title: str | None = None):
    """Horizontal grouped bars of pass@1 (%) per benchmark: ours (base, tuned) and, where the
    base model has one, the paper's row (`wavecoder.report.stage.comparison`'s result)."""
    bars = bars_of(result)
    benchmarks = list(dict.fromkeys(b["benchmark"] for b in bars))
    fig, ax = plt.subplots(figsize=(8, 0.55 * max(len(benchmarks), 1) * 2 + 1.5))
    if bars:
        sns.barplot(
            x=[b["pass@1 (%)"] for b in bars],
            y=[b["benchmark"] for b in bars],
            hue=[b["series"] for b in bars],
            orient="h",
            ax=ax,
        )
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlabel("pass@1 (%)")
    ax.set_ylabel("")
    model = result.get("paper_model")
    ax.set_title(title or (f"ours vs the paper ({model})" if model else "ours (no paper row)"))
    save(fig, path)
    return fig
