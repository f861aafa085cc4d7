"""Stage 05: one shareable HTML report assembling every stage's key tables and figures, with our
scores set beside the WaveCoder paper's numbers for the same base model (`wavecoder.report.paper`).

What the scores section reads from stage 04's `metrics.json`:

- `scores`: `{"rows": [...]}`, one row per (model, benchmark) as `stage_evaluate.score_rows`
  writes them; the report uses `model` ("base" or "tuned"), `benchmark` (`humaneval`, `mbpp`,
  `humanevalpack-{synthesize,fix,explain}-{python,js,java,go,cpp,rust}`), `problems` and
  `pass@1` (a fraction; None when the benchmark could not be scored).
- `settings`: this run's settings, to name each one that differs from the paper. Every key is
  optional; a missing one shows as "not recorded".

  - `base_model` (str): hub id or path the base weights came from; picks the paper row.
  - `paper_model` (str): a key of `paper.MODELS`, when `base_model` is a local copy of one.
  - `languages` (list[str]): HumanEvalPack languages evaluated (else read off `scores`).
  - `prompt_style` ({"base": S, "tuned": S}): S is a style name (`completion`, `wizardcoder`,
    `instruct`, `wavecoder`, `chat`, `alpaca`) or {benchmark: style name}.
  - `postprocess` (str or {benchmark: str}): `reference` (bigcode / WaveCoder) or `lenient`.
  - `examples` (int): accepted examples the model was tuned on.
  - `task_mix` ({task: int}): accepted examples per task (generation, summarization, repair,
    translation; stage 02's `code_generation` etc. are accepted as they are).
  - `finetune_method` (str): `full` or `lora`; `epochs` (float); `learning_rate` (float);
    `max_seq_length` (int).
  - `batch_size` (int): the global batch, per device x gradient accumulation x devices.
  - `optimizer` (str): e.g. `adamw`, `adafactor`.
  - `decoding` (str, or {"strategy": "greedy", "n_samples": 1, "max_new_tokens": N}).
  - `problems` ({benchmark: int}): problems evaluated (else read off `scores`).
  - `generator_model`, `judge_model` (str): stage 02's generator and discriminator.

  Any other key is listed as it is under the settings table. Without `base_model` the report
  falls back to `base_model` in `03_finetune/tuned_model.json` (stage 03's TunedModel).

A base model with no row in the paper is shown alone ("no paper row for this base model"); its
numbers are never set beside another model's. Paper numbers the paper took from elsewhere carry
a dagger, those of unstated origin a double dagger, each explained in a footnote.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

from wavecoder.finetune.tuned import TunedModel
from wavecoder.io import read_json
from wavecoder.report import paper
from wavecoder.stages import (
    BY_NAME,
    EVALUATE,
    FINETUNE,
    GENERATE,
    MANIFEST,
    METRICS,
    REPORT,
    STAGES,
)

# the stages the report shows: every one before it
REPORTED = tuple(s for s in STAGES if s is not REPORT)

# The paper's settings in words (the settings table adds per-model values; see settings_rows).
PAPER_SETTINGS = {
    "base model": "DeepSeek-Coder-6.7B-base, CodeLlama-7B, CodeLlama-13B, StarCoder-15B",
    "languages": "all six HumanEvalPack languages (Python, JavaScript, Java, Go, C++, Rust)",
    "prompt style (base)": "completion-style scores published elsewhere (base models' own "
    "reports, OctoPack) or of unstated origin; no Alpaca prompt",
    "prompt style (tuned)": "the Alpaca template (Appendix A): bigcode's `wizardcoder` prompt "
    "for HumanEvalPack, WaveCoder's mbpp_500 prompt for MBPP",
    "post-processing": "reference: bigcode-evaluation-harness for HumanEvalPack, WaveCoder's "
    "src/eval/mbpp_500 for MBPP",
    "examples": f"{paper.EXAMPLES:,} accepted (CodeSeaXDataset)",
    "task mix": ", ".join(f"{task} {n:,}" for task, n in paper.TASK_MIX.items()),
    "fine-tuning": f"{paper.FINETUNE_METHOD}, {paper.EPOCHS} epochs, seq {paper.MAX_SEQ_LENGTH}",
    "batch size": "512 (DeepSeek-Coder-6.7B), 256 (CodeLlama, StarCoder), global",
    "optimizer": "not named in the paper; WaveCoder's train.sh uses Adafactor",
    "decoding": "greedy pass@1 for the authors' own runs (sampled estimates for some rows "
    "taken from elsewhere)",
    "problems": "all: HumanEval 164, MBPP(500) 500, HumanEvalPack 164 per language",
}

ROLES = ("base", "tuned")
MARKS = {True: "\u2020", None: "\u2021", False: ""}  # dagger: elsewhere; double: unstated
NOT_FOUND = "not found"
TUNED_STYLES = {"wizardcoder", "wavecoder", "alpaca"}
BASE_STYLES = {"completion"}


def collect(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Per stage folder: its manifest, metrics and PNG figures (what exists)."""
    run_dir = Path(run_dir)
    stages: dict[str, dict[str, Any]] = {}
    for spec in REPORTED:
        folder = spec.folder(run_dir)
        if not folder.is_dir():
            continue
        stages[spec.name] = {
            # a stage still running may be writing them: unreadable counts as empty
            "manifest": read_json(folder / MANIFEST, strict=False) or {},
            "metrics": read_json(folder / METRICS, strict=False) or {},
            "figures": sorted(folder.glob("*.png")),
            "html": folder / f"{spec.name}.html",
        }
    return stages


# ---------------------------------------------------------------- scores against the paper


def paper_model_for(settings: dict[str, Any] | None) -> str | None:
    """The paper model (a key of paper.MODELS) for this run's settings, or None."""
    settings = settings or {}
    explicit = settings.get("paper_model")
    if isinstance(explicit, str) and explicit in paper.MODELS:
        return explicit
    return paper.model_for(settings.get("base_model"))


def split_benchmark(name: str) -> tuple[str | None, str | None]:
    """(task, language) of a HumanEvalPack benchmark name, else (None, None)."""
    parts = name.split("-")
    if len(parts) == 3 and parts[0] == "humanevalpack":
        return parts[1], parts[2]
    return None, None


def _order(name: str) -> tuple:
    if name == "humaneval":
        return (0,)
    if name == "mbpp":
        return (1,)
    task, lang = split_benchmark(name)
    if task in paper.HUMANEVALPACK_TASKS:
        where = paper.LANGUAGES.index(lang) if lang in paper.LANGUAGES else len(paper.LANGUAGES)
        return (2, paper.HUMANEVALPACK_TASKS.index(task), where, name)
    return (3, name)


def _pct(value: Any) -> float | None:
    return None if value is None else round(100 * float(value), 1)


def _delta(base: float | None, tuned: float | None) -> float | None:
    return None if base is None or tuned is None else round(tuned - base, 1)


def _ours(scores: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per benchmark: {role: raw pass@1 fraction or None} and {role: problems}."""
    values: dict[str, dict[str, Any]] = {}
    problems: dict[str, dict[str, Any]] = {}
    for row in (scores or {}).get("rows", []):
        bench, role = row.get("benchmark"), row.get("model")
        if not bench or not role:
            continue
        values.setdefault(bench, {})[role] = row.get("pass@1")
        problems.setdefault(bench, {})[role] = row.get("problems")
    return values, problems


def comparison(
    scores: dict[str, Any],
    settings: dict[str, Any] | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    """Our scores beside the paper's for this run's base model.

    Returns {"paper_model": key or None, "rows": [...], "notes": [...]}. A row: benchmark,
    task, language, problems, base, tuned, delta (ours, pass@1 in %), paper_base, paper_tuned,
    paper_delta and paper_base_source / paper_tuned_source (keys of paper.SOURCES, None where the
    paper has no value). Each HumanEvalPack task gets a `humanevalpack-TASK-avg` row (language
    "avg") holding, for each model that ran all six languages, the mean of its six scores,
    beside the paper's printed average; notes say which languages are missing otherwise."""
    settings = dict(settings or {})
    if base_model is not None:
        settings["base_model"] = base_model
    model = paper_model_for(settings)
    theirs = {role: paper.scores(model, role) if model else {} for role in ROLES}
    values, problems = _ours(scores)
    roles_run = [r for r in ROLES if any(r in v for v in values.values())]

    def paper_cells(key: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for role in ROLES:
            value, source = theirs[role].get(key, (None, None))
            out[f"paper_{role}"], out[f"paper_{role}_source"] = value, source
        out["paper_delta"] = _delta(out["paper_base"], out["paper_tuned"])
        return out

    rows: list[dict[str, Any]] = []
    for bench in sorted(values, key=_order):
        task, lang = split_benchmark(bench)
        base, tuned = _pct(values[bench].get("base")), _pct(values[bench].get("tuned"))
        counts = [n for n in problems[bench].values() if n is not None]
        rows.append(
            {
                "benchmark": bench,
                "task": task,
                "language": lang,
                "problems": max(counts) if counts else None,
                "base": base,
                "tuned": tuned,
                "delta": _delta(base, tuned),
                **paper_cells(bench),
            }
        )

    notes: list[str] = []
    for task in paper.HUMANEVALPACK_TASKS:
        ran = {
            role: [
                lang
                for lang in paper.LANGUAGES
                if values.get(f"humanevalpack-{task}-{lang}", {}).get(role) is not None
            ]
            for role in roles_run
        }
        if not any(ran.values()):
            continue
        means: dict[str, float | None] = {}
        missing: dict[str, list[str]] = {}
        for role in roles_run:
            if len(ran[role]) == len(paper.LANGUAGES):
                raw = [values[f"humanevalpack-{task}-{lang}"][role] for lang in paper.LANGUAGES]
                means[role] = round(100 * sum(raw) / len(raw), 1)
            else:
                missing[role] = [lang for lang in paper.LANGUAGES if lang not in ran[role]]
        lists = {tuple(langs) for langs in missing.values()}
        if len(missing) > 1 and len(lists) == 1:  # the same languages missing for every model
            notes.append(
                f"humanevalpack-{task}: no six-language average for {' or '.join(missing)}; "
                f"not run: {', '.join(lists.pop())}"
            )
        else:
            notes += [
                f"humanevalpack-{task}: no six-language average for {role}; "
                f"not run: {', '.join(langs)}"
                for role, langs in missing.items()
            ]
        if not any(v is not None for v in means.values()):
            continue
        avg = paper.average_key(task)
        base, tuned = means.get("base"), means.get("tuned")
        last = max(i for i, r in enumerate(rows) if r["task"] == task)
        rows.insert(
            last + 1,
            {
                "benchmark": avg,
                "task": task,
                "language": "avg",
                "problems": None,
                "base": base,
                "tuned": tuned,
                "delta": _delta(base, tuned),
                **paper_cells(avg),
            },
        )
    return {"paper_model": model, "rows": rows, "notes": notes}


def scores_rows(scores: dict[str, Any], base_model: str | None = None) -> list[dict[str, Any]]:
    """The rows of `comparison` (ours beside the paper's for `base_model`, which may also come
    as `scores["base_model"]`; without one there is no paper column)."""
    base_model = base_model or (scores or {}).get("base_model")
    return comparison(scores, base_model=base_model)["rows"]


# ------------------------------------------------------------------------- settings table


def _text(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _all(value: Any, allowed: set[str]) -> bool | None:
    """Whether a setting (a string or {name: string}) is within `allowed`; None if unset."""
    if value is None or value == {}:
        return None
    items = value.values() if isinstance(value, dict) else [value]
    return all(str(v).lower() in allowed for v in items)


def _number_equal(value: Any, expected: float) -> bool | None:
    try:
        return None if value is None else abs(float(value) - expected) < 1e-12
    except (TypeError, ValueError):
        return False


def _greedy(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, dict):
        strategy = str(value.get("strategy", "")).lower()
        samples = value.get("n_samples", 1)
        return strategy == "greedy" and samples in (None, 1)
    text = str(value).lower()
    return "greedy" in text and "sampl" not in text


def _problems(settings: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, int]:
    recorded = settings.get("problems")
    if isinstance(recorded, dict) and recorded:
        return {str(k): v for k, v in recorded.items()}
    return {r["benchmark"]: r["problems"] for r in rows if r["problems"] is not None}


def _paper_problems(bench: str) -> int | None:
    if bench in paper.PROBLEMS:
        return paper.PROBLEMS[bench]
    return paper.PROBLEMS["humanevalpack"] if bench.startswith("humanevalpack-") else None


def settings_rows(
    settings: dict[str, Any] | None,
    paper_model: str | None,
    rows: list[dict[str, Any]] | None = None,
) -> list[dict[str, str]]:
    """One row per setting: {"setting", "paper", "this run", "status"}; status is "differs",
    "same", "not recorded" or "no paper row". `rows` (from `comparison`) fill in languages and
    problems when the settings do not record them."""
    settings = settings if isinstance(settings, dict) else {}
    rows = rows or []
    info = paper.MODELS.get(paper_model) if paper_model else None
    out: list[dict[str, str]] = []

    def add(name: str, theirs: str, ours: Any, same: bool | None, shown: str | None = None):
        if same is None:
            status = "not recorded" if ours is None else "no paper row"
        else:
            status = "same" if same else "differs"
        out.append(
            {
                "setting": name,
                "paper": theirs,
                "this run": shown if shown is not None else _text(ours),
                "status": status,
            }
        )

    base = settings.get("base_model")
    if info:
        hub_ids = ", ".join(info["hub_ids"])  # type: ignore[arg-type]
        add("base model", f"{info['display']} ({hub_ids})", base, True)
    else:
        names = ", ".join(str(m["display"]) for m in paper.MODELS.values())
        add("base model", f"no paper row for this base model (the paper tunes {names})", base, None)

    languages = settings.get("languages")
    if languages is None:
        seen = {r["language"] for r in rows if r["task"] and r["language"] != "avg"}
        languages = [lang for lang in paper.LANGUAGES if lang in seen] or None
    same = None if languages is None else set(languages) == set(paper.LANGUAGES)
    add("languages", PAPER_SETTINGS["languages"], languages, same)

    styles = settings.get("prompt_style")
    styles = styles if isinstance(styles, dict) else {"base": styles, "tuned": styles}
    add(
        "prompt style (base)",
        PAPER_SETTINGS["prompt style (base)"],
        styles.get("base"),
        _all(styles.get("base"), BASE_STYLES),
    )
    add(
        "prompt style (tuned)",
        PAPER_SETTINGS["prompt style (tuned)"],
        styles.get("tuned"),
        _all(styles.get("tuned"), TUNED_STYLES),
    )
    post = settings.get("postprocess")
    add("post-processing", PAPER_SETTINGS["post-processing"], post, _all(post, {"reference"}))

    examples = settings.get("examples")
    add("examples", PAPER_SETTINGS["examples"], examples, _number_equal(examples, paper.EXAMPLES))
    mix = settings.get("task_mix")
    same = None
    if isinstance(mix, dict):
        same = {str(k).lower().removeprefix("code_"): v for k, v in mix.items()} == paper.TASK_MIX
    add("task mix", PAPER_SETTINGS["task mix"], mix, same)

    method = settings.get("finetune_method")
    add(
        "fine-tuning method",
        paper.FINETUNE_METHOD,
        method,
        None if method is None else str(method).lower() == paper.FINETUNE_METHOD,
    )
    epochs = settings.get("epochs")
    add("epochs", str(paper.EPOCHS), epochs, _number_equal(epochs, paper.EPOCHS))
    lr = settings.get("learning_rate")
    if info:
        paper_lr = float(info["learning_rate"])  # type: ignore[arg-type]
        add("learning rate", f"{paper_lr:g}", lr, _number_equal(lr, paper_lr))
    else:
        add("learning rate", "5e-05 (DeepSeek-Coder-6.7B), 2e-05 (others)", lr, None)
    seq = settings.get("max_seq_length")
    add(
        "max sequence length",
        f"{paper.MAX_SEQ_LENGTH} (WaveCoder's train.sh; not in the paper's text)",
        seq,
        _number_equal(seq, paper.MAX_SEQ_LENGTH),
    )
    batch = settings.get("batch_size")
    if info:
        add(
            "batch size (global)",
            f"{info['global_batch_size']} ({info['parallelism']})",
            batch,
            _number_equal(batch, float(info["global_batch_size"])),  # type: ignore[arg-type]
        )
    else:
        add("batch size (global)", PAPER_SETTINGS["batch size"], batch, None)
    optimizer = settings.get("optimizer")
    add(
        "optimizer",
        PAPER_SETTINGS["optimizer"],
        optimizer,
        None if optimizer is None else str(optimizer).lower() == paper.OPTIMIZER,
    )
    decoding = settings.get("decoding")
    add("decoding", PAPER_SETTINGS["decoding"], decoding, _greedy(decoding))

    counts = _problems(settings, rows)
    short = {
        b: (n, _paper_problems(b))
        for b, n in counts.items()
        if _paper_problems(b) is not None and n is not None and n < _paper_problems(b)
    }
    if counts:
        shown = (
            "; ".join(f"{b} {n}/{full}" for b, (n, full) in sorted(short.items()))
            if short
            else "all"
        )
        add("problems evaluated", PAPER_SETTINGS["problems"], counts, not short, shown)
    else:
        add("problems evaluated", PAPER_SETTINGS["problems"], None, None)

    for key, theirs, allowed in (
        ("generator_model", "GPT-3.5", {"gpt-3.5", "gpt-3.5-turbo"}),
        ("judge_model", "GPT-4", {"gpt-4", "gpt-4-0613", "gpt-4-0314"}),
    ):
        value = settings.get(key)
        add(
            key.replace("_", " "),
            theirs,
            value,
            None if value is None else str(value).lower() in allowed,
        )
    return out


KNOWN_SETTINGS = {
    "base_model",
    "paper_model",
    "languages",
    "prompt_style",
    "postprocess",
    "examples",
    "task_mix",
    "finetune_method",
    "epochs",
    "learning_rate",
    "max_seq_length",
    "batch_size",
    "optimizer",
    "decoding",
    "problems",
    "generator_model",
    "judge_model",
}


def other_settings(settings: dict[str, Any] | None) -> list[dict[str, str]]:
    """Settings stage 04 recorded under keys the paper comparison does not know."""
    settings = settings if isinstance(settings, dict) else {}
    return [
        {"setting": str(k), "this run": _text(v)}
        for k, v in settings.items()
        if k not in KNOWN_SETTINGS
    ]


# ---------------------------------------------------------------------------------- HTML


def _cell(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(rows: list[dict[str, Any]], css_class: str | None = None) -> str:
    if not rows:
        return "<p><em>no rows</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r[c])}</td>" for c in cols) + "</tr>" for r in rows
    )
    klass = f' class="{html.escape(css_class)}"' if css_class else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def paper_cell(value: float | None, source: str | None) -> str:
    """A paper value as shown: the number with its mark, or "not found"."""
    if value is None:
        return NOT_FOUND
    mark = MARKS[paper.SOURCES[source]["elsewhere"]] if source else ""  # type: ignore[index]
    return f"{value:.1f}{mark}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def display_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """The scores table as text cells (what the HTML shows, also handy in a notebook)."""
    with_paper = result["paper_model"] is not None
    out = []
    for r in result["rows"]:
        row = {
            "benchmark": r["benchmark"],
            "problems": "" if r["problems"] is None else str(r["problems"]),
            "base": _num(r["base"]),
            "tuned": _num(r["tuned"]),
            "delta": _num(r["delta"]),
        }
        if with_paper:
            row["paper base"] = paper_cell(r["paper_base"], r["paper_base_source"])
            row["paper tuned"] = paper_cell(r["paper_tuned"], r["paper_tuned_source"])
            row["paper delta"] = _num(r["paper_delta"])
        out.append(row)
    return out


def _footnotes(result: dict[str, Any]) -> list[str]:
    used: list[str] = []
    missing = False
    for r in result["rows"]:
        for role in ROLES:
            source = r[f"paper_{role}_source"]
            if source is None:
                missing = True
            elif source not in used and paper.SOURCES[source]["elsewhere"] is not False:
                used.append(source)
    notes = []
    for source in used:
        info = paper.SOURCES[source]
        kind = "reported elsewhere" if info["elsewhere"] else "source not stated in the paper"
        notes.append(f"{MARKS[info['elsewhere']]} {kind} ({info['table']}): {info['note']}")
    if missing:
        notes.append(
            f"{NOT_FOUND}: the paper (v5, Tables 3-5) prints no value for this model and "
            "benchmark (no HumanEvalSynthesize per language; no CodeLlama base row in "
            "Tables 4-5)"
        )
    return notes


def scores_section(evaluate: dict[str, Any], base_model: str | None = None) -> str:
    """HTML: our scores beside the paper's for this run's base model, and the settings table."""
    settings = evaluate.get("settings")
    settings = dict(settings) if isinstance(settings, dict) else {}
    if base_model and not settings.get("base_model"):
        settings["base_model"] = base_model
    result = comparison(evaluate.get("scores") or {}, settings)
    model = result["paper_model"]
    parts = ["<h2>Scores: pass@1 (%), ours beside the paper's</h2>"]
    src = html.escape(f"{paper.PAPER['version']}, arXiv {paper.PAPER['arxiv']}")
    if model:
        info = paper.MODELS[model]
        parts.append(
            f"<p>Base model <code>{html.escape(str(settings.get('base_model')))}</code>; paper "
            f"rows {html.escape(str(info['base_name']))} (base) and "
            f"{html.escape(str(info['tuned_name']))} (tuned), {src}, Tables 3-5. Averages are "
            "the mean of the six languages.</p>"
        )
    else:
        parts.append(
            "<p><strong>No paper row for this base model</strong> (<code>"
            f"{html.escape(str(settings.get('base_model') or 'not recorded'))}</code>): ours "
            f"only. The paper ({src}) reports "
            + html.escape(", ".join(str(m["display"]) for m in paper.MODELS.values()))
            + ".</p>"
        )
    parts.append(_table(display_rows(result), "scores"))
    notes = result["notes"] + (_footnotes(result) if model else [])
    if notes:
        parts.append(
            '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
        )
    rows = settings_rows(settings, model, result["rows"])
    differ = sum(r["status"] == "differs" for r in rows)
    parts.append(f"<p>Settings: {differ} differ from the paper.</p>")
    parts.append(_table(rows, "settings"))
    extra = other_settings(settings)
    if extra:
        parts.append("<p>Other settings recorded by stage 04:</p>" + _table(extra, "other"))
    return "\n".join(parts)


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
table.settings td,table.other td{text-align:left}
figure{display:inline-block;margin:0.5em;max-width:48%}img{max-width:100%}
.muted{color:#666;font-size:0.9em}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}
"""


def _base_model_of_run(run_dir: Path) -> str | None:
    """finetune.base_model as stage 03 recorded it in tuned_model.json; None without one."""
    if not FINETUNE.path(run_dir, "tuned_model").exists():
        return None
    return TunedModel.load(FINETUNE.folder(run_dir)).base_model


def funnel_rows(funnel: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Stage 02 per task: where the items ended, and which validator checks failed."""
    rows = []
    for task, counts in sorted(funnel.items()):
        checks = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("validator:")}
        rows.append(
            {
                "task": task,
                "items": counts.get("items", 0),
                "generator failed / unparseable": counts.get("generator_failed", 0)
                + counts.get("unparseable", 0),
                "prefilter": counts.get("prefilter", 0),
                "validators": counts.get("validators", 0),
                "of which the judge accepted": counts.get("validators_judge_accepted", "not asked"),
                "judge rejected": counts.get("judge_rejected", 0),
                "judge failed": counts.get("judge_failed", 0),
                "accepted": counts.get("accepted", 0),
                "validator checks failed": ", ".join(f"{k} {v}" for k, v in sorted(checks.items()))
                or "-",
            }
        )
    return rows


def funnel_section(funnel: dict[str, dict[str, int]]) -> str:
    return "<h3>Where the cases ended, per task</h3>" + _table(funnel_rows(funnel))


def targets_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Stage 02 per task: target (or '-' without targets), accepted, tried, accept rate, and
    how many rounds the task ran in."""
    rounds: dict[str, set] = {}
    for row in metrics.get("accept_by_round") or []:
        rounds.setdefault(row["task"], set()).add(row["round"])
    return [
        {
            "task": row["task"],
            "target": "-" if row.get("target") is None else row["target"],
            "accepted": row["accepted"],
            "tried": row["tried"],
            "accept rate": "-" if row.get("accept_rate") is None else f"{row['accept_rate']:.0%}",
            "met": {True: "yes", False: "no", None: "-"}[row.get("met")],
            "rounds": len(rounds.get(row["task"], ())),
        }
        for row in metrics.get("targets") or []
    ]


def targets_section(metrics: dict[str, Any]) -> str:
    summary = (metrics.get("llm") or {}).get("targets") or {}
    note = ""
    if summary:
        note = (
            f'<p class="muted">{summary.get("drawn", 0):,} of {summary.get("available", 0):,} '
            "selected records (reserve included) drawn; targets "
            + ("met" if summary.get("met") else "<strong>not met</strong>")
            + "</p>"
        )
    return "<h3>Targets vs accepted, per task</h3>" + note + _table(targets_rows(metrics))


def build_report(run_dir: str | Path, out_path: str | Path, title: str = "WaveCoder study") -> Path:
    """Write one self-contained HTML file (figures inlined) for the whole run."""
    run_dir = Path(run_dir)
    stages = collect(run_dir)
    parts = [f"<h1>{html.escape(title)}: run <code>{html.escape(run_dir.name)}</code></h1>"]
    parts.append(
        f'<p class="muted">built {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; '
        "each stage's executed notebook sits beside its data.</p>"
    )
    evaluate = stages.get(EVALUATE.name, {}).get("metrics", {})
    if evaluate.get("scores"):
        parts.append(scores_section(evaluate, _base_model_of_run(run_dir)))
        drawn = REPORT.path(run_dir, "ours_vs_paper")  # by the stage 05 notebook
        if drawn.exists():
            parts.append(_figure(drawn))
    for name, info in stages.items():
        manifest, metrics = info["manifest"], info["metrics"]
        parts.append(f"<h2>{html.escape(BY_NAME[name].title)}</h2>")
        status = manifest.get("status", "unknown")
        seconds = manifest.get("seconds")
        parts.append(
            f"<p><strong>{html.escape(str(metrics.get('headline', '')))}</strong><br>"
            f'<span class="muted">status {html.escape(str(status))}'
            + (f", {seconds:.0f} s" if isinstance(seconds, (int, float)) else "")
            + f", git {html.escape(str((manifest.get('git') or {}).get('commit', ''))[:10])}"
            + f', notebook <a href="{name}/{name}.html">{name}.html</a></span></p>'
        )
        if name == GENERATE.name and metrics.get("targets"):
            parts.append(targets_section(metrics))
        if name == GENERATE.name and metrics.get("funnel_by_task"):
            parts.append(funnel_section(metrics["funnel_by_task"]))
        parts.extend(_figure(p) for p in info["figures"])
    body = "\n".join(parts)
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )
    out_path = Path(out_path)
    out_path.write_text(doc, encoding="utf-8")
    return out_path
