"""The stage table (wavecoder.stages) is the one place that names stage folders and files."""

from __future__ import annotations

import ast
import json
import re

import pytest
from wavecoder import stages
from wavecoder.io import write_metrics

from .conftest import PROJECT

LIB = PROJECT / "lib" / "wavecoder"
STAGE_NAME = re.compile(r"^0[1-5]_[a-z]+(/|$)")


def test_every_input_is_an_upstream_output():
    for spec in stages.STAGES:
        for name, key in spec.inputs:
            assert name in spec.upstream, (spec.name, name)
            assert key in stages.BY_NAME[name].outputs, (spec.name, name, key)
        for name in (*spec.upstream, *spec.reads):
            assert name in stages.BY_NAME and name < spec.name, (spec.name, name)


def test_lookup_by_name_number_and_short_name():
    assert stages.stage("02") is stages.GENERATE
    assert stages.stage("2") is stages.GENERATE
    assert stages.stage("generate") is stages.GENERATE
    assert stages.stage("04_evaluate") is stages.EVALUATE
    with pytest.raises(KeyError, match="01_select"):
        stages.stage("06")
    with pytest.raises(KeyError, match="selected"):
        stages.SELECT.path("run", "chosen")


def test_paths_come_from_the_table(tmp_path):
    assert stages.SELECT.path(tmp_path, "selected") == tmp_path / "01_select" / "selected.parquet"
    assert stages.FINETUNE.notebook == "03_finetune.ipynb"
    assert all((PROJECT / "notebooks" / s.notebook).exists() for s in stages.STAGES)


def _string_constants(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_stage_folder_literal_outside_the_table():
    """A string that is a stage folder (or a path under one) appears only in stages.py: the
    runner, the report and the stage packages take names from the table."""
    found = []
    for path in sorted(LIB.rglob("*.py")):
        if path.name == "stages.py":
            continue
        for lineno, value in _string_constants(path):
            if STAGE_NAME.match(value):
                found.append(f"{path.relative_to(LIB)}:{lineno}: {value!r}")
    for notebook in sorted((PROJECT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and re.search(r"[\"']0[1-5]_[a-z]+", source):
                found.append(f"{notebook.name}: {source.splitlines()[0]}")
    assert not found, found


def test_write_metrics_needs_a_headline(tmp_path):
    with pytest.raises(ValueError, match="headline"):
        write_metrics(tmp_path, {"pool": 3})
    path = write_metrics(tmp_path, {"headline": "selected 2 of 3", "pool": 3})
    assert path == tmp_path / stages.METRICS
    assert json.loads(path.read_text()) == {"headline": "selected 2 of 3", "pool": 3}
    assert not list(tmp_path.glob("*.tmp"))
