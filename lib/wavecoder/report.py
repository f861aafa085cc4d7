"""Stage 05: one shareable HTML report assembling every stage's key tables and figures."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

STAGE_TITLES = {
    "01_select": "01 Select: a diverse subset of raw code",
    "02_generate": "02 Generate: LLM-written and LLM-judged instruction data",
    "03_finetune": "03 Fine-tune",
    "04_evaluate": "04 Evaluate",
}

# Paper headline (WaveCoder, arXiv 2312.14187, pass@1 in %): DeepSeek-Coder-6.7B base vs
# WaveCoder-DS-6.7B, greedy decoding, ~20K CodeOcean examples, full fine-tuning.
PAPER_HEADLINE = {
    "humaneval": {"base": 49.4, "tuned": 64.0},
    "mbpp": {"base": 60.6, "tuned": 62.8},
    "humanevalfix": {"base": 29.0, "tuned": 49.4},
    "humanevalexplain": {"base": 34.6, "tuned": 41.3},
}
PAPER_SETTINGS = {
    "model": "DeepSeek-Coder-6.7B-base",
    "data": "CodeOcean ~20K examples (GPT-3.5 writes, GPT-4 judges)",
    "training": "full fine-tuning, 3 epochs, lr 5e-5, seq 2048",
    "decoding": "greedy pass@1, all problems",
}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Per stage folder: its manifest, metrics and PNG figures (what exists)."""
    run_dir = Path(run_dir)
    stages: dict[str, dict[str, Any]] = {}
    for name in STAGE_TITLES:
        folder = run_dir / name
        if not folder.is_dir():
            continue
        stages[name] = {
            "manifest": read_json(folder / "manifest.json") or {},
            "metrics": read_json(folder / "metrics.json") or {},
            "figures": sorted(folder.glob("*.png")),
            "html": folder / f"{name}.html",
        }
    return stages


def headline_family(benchmark: str) -> str | None:
    """Map one of our benchmark names to the paper's headline column."""
    if benchmark == "humaneval":
        return "humaneval"
    if benchmark.startswith("mbpp"):
        return "mbpp"
    if benchmark.startswith("humanevalpack-fix"):
        return "humanevalfix"
    if benchmark.startswith("humanevalpack-explain"):
        return "humanevalexplain"
    return None


def scores_rows(scores: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (benchmark, base, tuned, delta, paper base, paper tuned) from stage 04's scores."""
    by_bench: dict[str, dict[str, Any]] = {}
    for row in scores.get("rows", []):
        entry = by_bench.setdefault(
            row["benchmark"], {"benchmark": row["benchmark"], "problems": row.get("problems")}
        )
        value = row.get("pass@1")
        entry[row["model"]] = None if value is None else round(100 * value, 1)
    out = []
    for bench, entry in sorted(by_bench.items()):
        family = headline_family(bench)
        paper = PAPER_HEADLINE.get(family or "", {})
        base, tuned = entry.get("base"), entry.get("tuned")
        out.append(
            {
                "benchmark": bench,
                "problems": entry.get("problems"),
                "base": base,
                "tuned": tuned,
                "delta": None if base is None or tuned is None else round(tuned - base, 1),
                "paper_base": paper.get("base"),
                "paper_tuned": paper.get("tuned"),
            }
        )
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p><em>no rows</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if r[c] is None else str(r[c]))}</td>" for c in cols)
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'
        f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
    )


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:0.5em;max-width:48%}img{max-width:100%}
.muted{color:#666;font-size:0.9em}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}
"""


def build_report(run_dir: str | Path, out_path: str | Path, title: str = "WaveCoder study") -> Path:
    """Write one self-contained HTML file (figures inlined) for the whole run."""
    run_dir = Path(run_dir)
    stages = collect(run_dir)
    parts = [f"<h1>{html.escape(title)}: run <code>{html.escape(run_dir.name)}</code></h1>"]
    parts.append(
        f'<p class="muted">built {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; '
        "each stage's executed notebook sits beside its data.</p>"
    )
    evaluate = stages.get("04_evaluate", {}).get("metrics", {})
    if evaluate.get("scores"):
        parts.append("<h2>Scores: pass@1 (%), ours beside the paper's headline</h2>")
        parts.append(_table(scores_rows(evaluate["scores"])))
        differs = evaluate.get("settings", {})
        rows = [
            {"setting": key, "paper": PAPER_SETTINGS[key], "this run": differs.get(key, "")}
            for key in PAPER_SETTINGS
        ]
        parts.append("<p>Settings that differ from the paper:</p>" + _table(rows))
    for name, info in stages.items():
        manifest, metrics = info["manifest"], info["metrics"]
        parts.append(f"<h2>{html.escape(STAGE_TITLES[name])}</h2>")
        status = manifest.get("status", "unknown")
        seconds = manifest.get("seconds")
        parts.append(
            f"<p><strong>{html.escape(str(metrics.get('headline', '')))}</strong><br>"
            f'<span class="muted">status {html.escape(status)}'
            + (f", {seconds:.0f} s" if isinstance(seconds, (int, float)) else "")
            + f", git {html.escape(str((manifest.get('git') or {}).get('commit', ''))[:10])}"
            + f', notebook <a href="{name}/{name}.html">{name}.html</a></span></p>'
        )
        parts.extend(_figure(p) for p in info["figures"])
    body = "\n".join(parts)
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )
    out_path = Path(out_path)
    out_path.write_text(doc, encoding="utf-8")
    return out_path
