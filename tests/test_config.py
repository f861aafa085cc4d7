from __future__ import annotations

from pathlib import Path

import pytest
from wavecoder.config import ParamsError, StudyParams, load_params, parse_override

from .conftest import PROJECT


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["default", "smoke", "paper"])
def test_shipped_params_validate(name):
    params = load_params(PROJECT / "params" / f"{name}.yaml")
    assert isinstance(params, StudyParams)
    assert params.run_name == name
    assert params.base_dir == str(PROJECT)


def test_paper_scale_settings():
    paper = load_params(PROJECT / "params" / "paper.yaml")
    assert paper.select.embedding_model == "sentence-transformers/all-roberta-large-v1"
    assert paper.select.k == 20000 and paper.select.pool_size is None
    assert paper.select.filters.min_lines == 3  # inherited through extends


def test_extends_merges_deeply_and_child_wins(tmp_path):
    write(tmp_path, "base.yaml", "seed: 3\nselect:\n  k: 10\n  pool_size: 100\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nselect:\n  k: 7\n")
    params = load_params(child)
    assert params.seed == 3
    assert params.select.k == 7
    assert params.select.pool_size == 100
    assert params.run_name == "child"


def test_set_overrides_parse_yaml_values(tmp_path):
    path = write(tmp_path, "p.yaml", "select:\n  k: 10\n")
    params = load_params(
        path, ["select.k=42", "select.filters.decontaminate=[mbpp]", "select.pool_size=null"]
    )
    assert params.select.k == 42
    assert params.select.filters.decontaminate == ["mbpp"]
    assert params.select.pool_size is None


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    path = write(tmp_path, "typo.yaml", "seed: 1\nselect:\n  pool_size: 10\n  kk: 5\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert f"{path.resolve()}:4" in message
    assert "unknown key 'select.kk'" in message
    assert "did you mean 'select.k'" in message


def test_unknown_key_in_base_file_names_the_base(tmp_path):
    base = write(tmp_path, "base.yaml", "corpus:\n  sorce: harvest\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nseed: 2\n")
    with pytest.raises(ParamsError) as err:
        load_params(child)
    assert f"{base.resolve()}:2" in str(err.value)
    assert "did you mean 'corpus.source'" in str(err.value)


def test_unknown_section_suggests_section(tmp_path):
    path = write(tmp_path, "p.yaml", "selcet:\n  k: 1\n")
    with pytest.raises(ParamsError, match=r"did you mean 'select'"):
        load_params(path)


def test_wrong_type_names_key_value_and_type(tmp_path):
    path = write(tmp_path, "p.yaml", "select:\n  k: lots\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert "select.k = 'lots'" in message
    assert "integer" in message
    assert f"{path.resolve()}:2" in message


def test_override_typo_is_attributed_to_set(tmp_path):
    path = write(tmp_path, "p.yaml", "seed: 1\n")
    with pytest.raises(ParamsError, match=r"--set: unknown key 'select.kay'"):
        load_params(path, ["select.kay=3"])


def test_bad_override_syntax():
    with pytest.raises(ParamsError, match="expected section.key=value"):
        parse_override("select.k")


def test_circular_extends(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ParamsError, match="circular extends"):
        load_params(tmp_path / "a.yaml")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = write(tmp_path, "bad.yaml", "select: [unclosed\n")
    with pytest.raises(ParamsError, match="invalid YAML"):
        load_params(bad)


def test_relative_paths_resolve_against_project_root():
    params = load_params(PROJECT / "params" / "default.yaml")
    assert params.resolve_path("outputs/x") == PROJECT / "outputs" / "x"
    assert params.resolve_path("/abs/y") == Path("/abs/y")


@pytest.mark.parametrize(
    ("name", "global_batch", "learning_rate", "batch_size"),
    [("paper", 512, 5e-5, 4), ("paper-codellama", 256, 2e-5, 4), ("paper-starcoder", 256, 2e-5, 2)],
)
def test_paper_training_batch_and_optimizer(name, global_batch, learning_rate, batch_size):
    """Section 3.1's global batches (examples), WaveCoder's train.sh optimizer and warmup."""
    ft = load_params(PROJECT / "params" / f"{name}.yaml").finetune
    assert ft.global_batch_size == global_batch and ft.learning_rate == learning_rate
    assert ft.optimizer == "adafactor" and ft.warmup_steps == 15 and ft.lr_scheduler == "linear"
    assert ft.batch_size == batch_size and ft.method == "full" and ft.epochs == 3
    # derived at launch: no paper file sets it (default.yaml's 1 is ignored)
    assert "gradient_accumulation:" not in (PROJECT / "params" / f"{name}.yaml").read_text()
    assert "512" in (PROJECT / "params" / "paper.yaml").read_text().split("finetune:")[1]


def test_global_batch_and_warmup_steps_default_to_the_old_behaviour():
    ft = load_params(PROJECT / "params" / "default.yaml").finetune
    assert ft.global_batch_size is None and ft.warmup_steps is None and ft.optimizer == "adamw"
