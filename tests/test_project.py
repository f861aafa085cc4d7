"""Project hygiene: dependency lists in sync, notebooks thin and without outputs."""

from __future__ import annotations

import ast
import json

import pytest
import tomllib
import yaml
from wavecoder.config import NotebookParameters

from .conftest import PROJECT

NOTEBOOKS = sorted((PROJECT / "notebooks").glob("*.ipynb"))


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((PROJECT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    assert set(pip_sections[0]) == wanted


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
