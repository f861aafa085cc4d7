"""Untrusted text is never markup (issue 10).

What an LLM wrote, a model generated, a dataset or a program holds reaches the shared HTML (each
stage notebook rendered by nbconvert, and stage 05's report.html) as escaped text only. The
stage notebooks' display cells run here, unchanged, on data full of `<script>` and
`<img onerror>` payloads (their heavy inputs stubbed), and are rendered the way the runner
renders them; stage 05 runs whole through `runner.run_stage` on a fake run. No payload may be
live in any page, and each must be there as visible text (so the data did reach the page).
"""

from __future__ import annotations

import ast
import base64
import json
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from wavecoder import config, runner
from wavecoder.finetune.tuned import TunedModel
from wavecoder.report import stage as report
from wavecoder.stages import FINETUNE

from .conftest import PROJECT

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
SVG = "<svg onload=alert(1)>"
BOTH = f"strip {SCRIPT} and {IMG} tags"
LINK = "[click](javascript:alert(1))"
PAYLOADS = (SCRIPT, IMG, SVG)

MARKUP_DISPLAYS = {"Markdown", "HTML", "Javascript", "SVG", "Latex", "Math", "IFrame"}

# A 1x1 PNG, for a figure whose file name is a payload.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


class _Page(HTMLParser):
    """What in a page is live (a script, an event handler, a javascript: URL holding one of our
    payloads' `alert(`) and what is visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.live: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self._check(tag, attrs)
        self._in_script = tag == "script"

    def handle_startendtag(self, tag, attrs):
        self._check(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            if "alert(" in data:
                self.live.append(f"<script> {data.strip()[:80]}")
        else:
            self.text.append(data)

    def _check(self, tag, attrs):
        for name, value in attrs:
            value = value or ""
            if name.startswith("on") and "alert(" in value:
                self.live.append(f"<{tag} {name}={value}>")
            if name in ("href", "src", "action", "formaction") and "javascript:" in value.lower():
                self.live.append(f"<{tag} {name}={value}>")


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def assert_inert(page: str, must_show: tuple[str, ...] = PAYLOADS, where: str = "page") -> None:
    parsed = parse(page)
    assert not parsed.live, f"{where}: live markup from untrusted text: {parsed.live}"
    visible = "".join(parsed.text)
    missing = [p for p in must_show if p not in visible]
    assert not missing, f"{where}: payloads not shown as text (did the data reach it?): {missing}"


# ------------------------------------------------------------------ the detector has teeth


def test_detector_finds_what_markdown_and_html_displays_make_live(tmp_path):
    """The display calls the notebooks used to make (`display(Markdown(f"**{text}**"))`),
    rendered as the runner renders: the payloads come out live, and the check says so."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("display(Markdown(f'**{text}**'))")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/markdown": f"**{BOTH}**"}),
        nbformat.v4.new_output("display_data", data={"text/markdown": LINK}),
        nbformat.v4.new_output("display_data", data={"text/html": SVG}),
    ]
    nb.cells = [cell]
    path = tmp_path / "old.ipynb"
    nbformat.write(nb, path)
    live = parse(runner.render_html(path).read_text()).live
    assert any(x.startswith("<script>") for x in live), live
    assert any(x.startswith("<img onerror") for x in live), live
    assert any(x.startswith("<svg onload") for x in live), live
    assert any("javascript:" in x for x in live), live


# ------------------------------------------------------------------ stage notebooks, statically


@pytest.mark.parametrize(
    "path", sorted((PROJECT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name
)
def test_notebooks_use_no_markup_displays(path):
    """Markdown/HTML displays turn text into markup; the notebooks use print, DataFrames and
    `wavecoder.display` (escaped) instead."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("IPython"):
                used = {a.name for a in node.names} & MARKUP_DISPLAYS
                assert not used, f"{path.name} cell {cell.id}: imports {sorted(used)}"
            if isinstance(node, ast.Attribute):
                assert node.attr not in MARKUP_DISPLAYS, f"{path.name} cell {cell.id}: {node.attr}"


# ------------------------------------------------------------------ stage notebooks, executed

# (notebook, cell id, stubs run before it): the stubs stand in for what the cell reads (the
# corpus, the LLM run, the model, the benchmarks) and hand it payloads; the cell itself is the
# notebook's own source.
COMMON = f"""
from pathlib import Path
from types import SimpleNamespace as NS

SCRIPT, IMG, SVG, BOTH = {SCRIPT!r}, {IMG!r}, {SVG!r}, {BOTH!r}
params = None
"""

CASES = [
    (
        "01_select",
        "cell-04",
        """
        report = NS(files=[1], malformed=2, malformed_positions=[SCRIPT, IMG])
        corpus = NS(LoadReport=lambda: report)
        raw = pl.DataFrame(
            {"repo": [SCRIPT], "path": [IMG], "func_name": [SVG], "language": ["python"],
             "docstring": [SCRIPT]}
        )
        stage = NS(load_corpus=lambda params, report: raw)
        """,
    ),
    (
        "01_select",
        "cell-19",
        """
        kcenter_idx, reserve_idx, pool = [0], [], NS(height=1)
        diversity = {"kcenter": {"covering_radius": 0.5}, "random": {"covering_radius": 0.7}}
        report = NS(as_metrics=lambda: {"files": [SCRIPT]})
        outcome = NS(funnel=[{"step": "loaded", "removed": 0}], notes=[IMG])
        select_cfg = NS(embedding_model=SVG)
        embeddings, embed_stats = NS(shape=(1, 2)), NS(computed=1, from_cache=0)
        stage = NS(distribution=lambda frame: {"languages": {SCRIPT: 1}})
        groups = {"pool": None}
        """,
    ),
    (
        "02_generate",
        "cell-10",
        """
        rows = [{"id": "a", "task": "repair", "instruction": SCRIPT, "input": IMG, "output": SVG}]
        run = NS(
            by_status=lambda status: rows,
            records=[{"status": "rejected", "reason": SCRIPT}, {"status": "failed", "reason": IMG}],
        )
        stage = NS(
            codeocean_row=lambda r: r,
            summarize=lambda run, params: {
                "headline": BOTH, "targets": [{"task": SVG, "target": SCRIPT}]
            },
        )
        """,
    ),
    ("02_generate", "cell-12", ""),
    ("02_generate", "cell-17", "diversity, leak, params = {}, {}, None"),
    (
        "03_finetune",
        "tokenize",
        """
        prepared = NS(notes=[SCRIPT], summary_rows=lambda: [{"": IMG, "value": SVG}])
        stage = NS(prepare_data=lambda *args: prepared)
        params = tokenizer = data_path = None
        """,
    ),
    (
        "03_finetune",
        "example",
        """
        ft = NS(max_seq_length=8, prompt="alpaca", sample_prompts=1, sample_max_new_tokens=8)
        prepared, tokenizer = NS(train_records=[None], val_records=[None]), None
        data = NS(
            tokenize_record=lambda *args: None,
            masked_view=lambda example, tokenizer: {SCRIPT: IMG, "response (loss)": SVG},
        )
        """,
    ),
    (
        "03_finetune",
        "train",
        """
        result = NS(
            resumed_from=SCRIPT, headline=lambda: BOTH, parameters={"trainable": 1, "total": 2},
            non_padding_fraction=0.5, train_seconds=1.0,
        )
        samples = [{"id": "a", "task": "repair", "instruction": BOTH, "generated": SCRIPT,
                    "reference": IMG + SVG}]
        stage = NS(finetune=lambda *args, **kwargs: result)
        tuned = NS(load_tuned=lambda out: (None, None), generate_samples=lambda *args: samples)
        files = FINETUNE.outputs
        """,
    ),
    ("03_finetune", "samples", ""),
    (
        "03_finetune",
        "metrics",
        """
        prepared.metrics, prepared.notes = lambda: {SCRIPT: IMG}, [SVG]
        model_path, models = None, NS(describe=lambda path: {"name": SVG})
        """,
    ),
    (
        "04_evaluate",
        "cell-04",
        """
        stage = NS(
            load_benchmarks=lambda params: ({}, {SCRIPT: IMG}),
            split_by_toolchain=lambda loaded: ({}, {SVG: SCRIPT}),
            settings_summary=lambda *args: {"base_model": SCRIPT},
        )
        """,
    ),
    (
        "04_evaluate",
        "cell-13",
        """
        rows, scores, benchmarks, models = [], {BOTH: {}}, {}, []
        cfg, files = NS(limit=1), {"scores": "scores.json"}
        isolation = {"missing": [SCRIPT]}
        """,
    ),
]


# wavecoder modules the cells may import for real: light, and what writes metrics.json
LIGHT = {"wavecoder", "wavecoder.display", "wavecoder.io", "wavecoder.stages"}


def _light_imports(nb: nbformat.NotebookNode) -> str:
    """The notebook's own imports minus the heavy wavecoder modules its stubs replace, so the
    display names (display, Markdown or the escaping helpers) are the notebook's."""
    keep = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.parse(cell.source).body:
            if isinstance(node, ast.Import):
                if all(a.name.split(".")[0] != "wavecoder" or a.name in LIGHT for a in node.names):
                    keep.append(ast.unparse(node))
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if module.split(".")[0] != "wavecoder" or module in LIGHT:
                    keep.append(ast.unparse(node))
    return "\n".join(keep)


def stage_display_cells(notebooks: Path, work: Path) -> Path:
    """A notebook of every case (stub cell, then the stage notebook's own cell), executed
    in the runner's kernel and rendered to HTML with the runner's `render_html`."""
    from nbclient import NotebookClient

    cells = [nbformat.v4.new_code_cell(COMMON + f"out = run_dir = Path({str(work)!r})")]
    for name in sorted({name for name, _, _ in CASES}):
        stage = nbformat.read(notebooks / f"{name}.ipynb", as_version=4)
        cells.append(nbformat.v4.new_code_cell(_light_imports(stage)))
        by_id = {c.id: c for c in stage.cells}
        for _, cell_id, stubs in (case for case in CASES if case[0] == name):
            if stubs:
                cells.append(nbformat.v4.new_code_cell(textwrap.dedent(stubs)))
            cells.append(nbformat.v4.new_code_cell(by_id[cell_id].source))
    nb = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(
        nb,
        kernel_name=runner._kernel_name(),
        timeout=120,
        resources={"metadata": {"path": str(work)}},
    ).execute()
    path = work / "stage_cells.ipynb"
    nbformat.write(nb, path)
    return runner.render_html(path)


def test_stage_notebook_cells_show_untrusted_text_as_text(tmp_path):
    page = stage_display_cells(PROJECT / "notebooks", tmp_path)
    assert_inert(page.read_text(), where=page.name)


# ------------------------------------------------------------------ stage 05 and report.html


def fake_run(run_dir: Path) -> Path:
    """A finished run whose metrics, manifests, settings and file names are payloads."""
    stages = {
        "01_select": {"headline": BOTH},
        "02_generate": {"headline": SCRIPT},
        "03_finetune": {"headline": f"{IMG} {LINK}"},
        "04_evaluate": {
            "headline": SVG,
            "scores": {
                "rows": [
                    {"model": "base", "benchmark": SCRIPT, "problems": IMG, "pass@1": 0.5},
                    {"model": "tuned", "benchmark": "humaneval", "problems": 164, "pass@1": 0.25},
                    {"model": "base", "benchmark": IMG, "problems": 1, "pass@1": None},
                ]
            },
            "settings": {
                "base_model": SCRIPT,
                "prompt_style": {"base": IMG, "tuned": SVG},
                "generator_model": BOTH,
                "languages": [SCRIPT],
                IMG: SCRIPT,
            },
            "skipped": {SCRIPT: IMG},
        },
    }
    for name, metrics in stages.items():
        folder = run_dir / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        manifest = {"status": SCRIPT, "seconds": 1.0, "git": {"commit": IMG}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "02_generate" / f"{IMG}.png").write_bytes(PNG)
    folder = FINETUNE.folder(run_dir)
    TunedModel(
        method="lora", base_model=BOTH, base_model_path=SCRIPT, prompt="alpaca",
        max_seq_length=8, dtype="float32", adapter=str(folder / "adapter"),
    ).save(folder)  # fmt: skip
    return run_dir


def test_report_html_escapes_everything(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    page = report.build_report(run_dir, tmp_path / "report.html", title=SCRIPT)
    assert_inert(page.read_text(), where="report.html")


def test_stage_05_notebook_and_report_render_payloads_as_text(tmp_path):
    """Stage 05 run as the runner runs it (papermill, then nbconvert) on the fake run."""
    run_dir = fake_run(tmp_path / "run")
    params_file = PROJECT / "params" / "default.yaml"
    params = config.load_params(params_file)
    (stage,) = runner.select_stages("05")
    result = runner.run_stage(stage, params_file, {}, params, run_dir, force=True, progress=False)
    assert result.status == "completed", result.error
    folder = run_dir / "05_report"
    assert_inert((folder / "05_report.html").read_text(), where="05_report.html")
    assert_inert((run_dir / "report.html").read_text(), where="report.html")
