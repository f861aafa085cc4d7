"""Project hygiene: locks in step with pyproject.toml, notebooks thin and without outputs."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from wavecoder.config import NotebookParameters

from .conftest import PROJECT

NOTEBOOKS = sorted((PROJECT / "notebooks").glob("*.ipynb"))


LOCKS = {"cpu": PROJECT / "locks" / "cpu.txt", "cuda": PROJECT / "locks" / "cuda.txt"}
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*\\?")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{normalised name: (version, sha256 hashes)} of a lock written by scripts/lock.sh."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            found = _PIN.fullmatch(line)
            assert found, f"{path.name}: not an exact pin: {line!r}"
            name = canonicalize_name(found.group(1))
            entries[name] = (found.group(2), [])
        else:
            assert name is not None and _HASH.search(line), f"{path.name}: {line!r}"
            entries[name][1].extend(_HASH.findall(line))
    return entries


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    ]


def _extra_requirements(requirement: Requirement) -> list[Requirement]:
    """What `name[extra]` adds, read from the installed distribution's metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = [Requirement(r) for r in requires(requirement.name) or []]
    except PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed: its extras cannot be read")
    env = {"python_version": "3.11", "platform_system": "Linux", "sys_platform": "linux"}
    return [
        r
        for r in declared
        if r.marker is not None
        and any(r.marker.evaluate({**env, "extra": extra}) for extra in requirement.extras)
        and not r.marker.evaluate({**env, "extra": ""})
    ]


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_lock_satisfies_pyproject(kind):
    """Every requirement of pyproject.toml (dependencies, dev extra, and what their extras
    add) is in the lock at a version it allows: a lock older than pyproject fails here."""
    lock = read_lock(LOCKS[kind])
    wanted = pyproject_requirements()
    wanted += [r for req in wanted if req.extras for r in _extra_requirements(req)]
    missing = [str(r) for r in wanted if canonicalize_name(r.name) not in lock]
    assert not missing, f"locks/{kind}.txt lacks {missing}: run `make lock`"
    outside = [
        f"{r} (locked {lock[canonicalize_name(r.name)][0]})"
        for r in wanted
        if not r.specifier.contains(lock[canonicalize_name(r.name)][0], prereleases=True)
    ]
    assert not outside, f"locks/{kind}.txt does not satisfy {outside}: run `make lock`"


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_lock_pins_every_file_by_hash(kind):
    lock = read_lock(LOCKS[kind])
    assert len(lock) > 100
    assert not [name for name, (_, hashes) in lock.items() if not hashes]
    assert "torch" in lock and "uv" in lock  # setup.sh installs uv from the lock's own entry


def test_cpu_and_cuda_locks_differ_only_in_torch_and_its_gpu_libraries():
    from wavecoder.select.corpus import GPU_ONLY_DISTRIBUTIONS

    cpu, cuda = read_lock(LOCKS["cpu"]), read_lock(LOCKS["cuda"])
    assert cpu["torch"][0].endswith("+cpu") and cpu["torch"][0].split("+")[0] == cuda["torch"][0]
    # the CPU build's digest is the one PyTorch's CPU index lists for the cp311 x86_64 wheel
    assert "6746dbcbeb526eb61330b76b41ff1b4eb848951103a892eeb080dfa2b264667b" in cpu["torch"][1]
    assert set(cpu) <= set(cuda)
    assert {n: cpu[n][0] for n in cpu if n != "torch"} == {
        n: cuda[n][0] for n in cpu if n != "torch"
    }
    # what only CUDA machines install is never harvested into the embedded corpus
    gpu_only = sorted(set(cuda) - set(cpu))
    assert gpu_only and all(GPU_ONLY_DISTRIBUTIONS.fullmatch(n) for n in gpu_only), gpu_only
    assert not [n for n in cpu if GPU_ONLY_DISTRIBUTIONS.fullmatch(n)]


def test_environment_yml_is_written_from_the_cpu_lock():
    env = yaml.safe_load((PROJECT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    assert "-r locks/cpu.txt" in pip_sections[0] and "--require-hashes" in pip_sections[0]
    assert "python=3.11" in env["dependencies"]  # the Python the locks are resolved for
    assert "LOCK_PYTHON:-3.11}" in (PROJECT / "scripts" / "lock.sh").read_text()


def test_the_environment_under_test_is_the_lock_setup_installed():
    """The venv that setup.sh made holds every locked package at its locked version."""
    import sys
    from importlib.metadata import distributions

    marker = Path(sys.prefix) / ".lock"
    if not marker.is_file():
        pytest.skip("not a venv made by scripts/setup.sh")
    lock = read_lock(PROJECT / marker.read_text().strip())
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    differ = {
        name: (version, installed.get(name))
        for name, (version, _) in lock.items()
        if installed.get(name) != version
    }
    assert not differ, f"(locked, installed): {differ}; run `make setup`"


def test_there_are_stage_notebooks():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_select.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell_matching_the_runner(path):
    import papermill as pm

    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters'"
    seen = pm.inspect_notebook(str(path))
    assert set(seen) == set(NotebookParameters.model_fields)
    # plain `name = literal` lines
    for node in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_thin(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        defs = [
            n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))
        ]
        assert not defs, f"{path.name}: logic belongs in lib/wavecoder, not the notebook"


def test_ci_runs_the_readme_test_command():
    readme = (PROJECT / "README.md").read_text()
    first_block = readme.split("```")[1]
    commands = [line for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make study", "make test"]
    assert "make test" in (PROJECT / ".ci" / "run").read_text()
