"""The five stages in one table: the only place that names a stage's folder, notebook, params
sections, the files it writes and the stages it needs. The runner, the report and every stage
package learn folder and file names here, so a rename is one edit.

    outputs/<run>/<stage.name>/<stage.outputs[key]>  outputs/default/01_select/selected.parquet
    notebooks/<stage.notebook>                      notebooks/01_select.ipynb
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

METRICS = "metrics.json"  # every stage writes one (wavecoder.io.write_metrics)
MANIFEST = "manifest.json"  # written by the runner around the notebook


@dataclass(frozen=True)
class StageSpec:
    name: str  # folder under the run and notebook stem, e.g. "01_select"
    title: str  # as the report heads the stage's section
    params: tuple[str, ...]  # params sections whose values fingerprint the stage
    outputs: Mapping[str, str]  # key -> file or folder name inside the stage folder
    upstream: tuple[str, ...] = ()  # stages that must have completed before it runs
    reads: tuple[str, ...] = ()  # further stages it reads when present (the report)
    inputs: tuple[tuple[str, str], ...] = field(default=())  # (stage, output key) it reads

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"

    def folder(self, run_dir: str | Path) -> Path:
        return Path(run_dir) / self.name

    def path(self, run_dir: str | Path, key: str) -> Path:
        """outputs/<run>/<stage>/<file> for one of the stage's outputs, by key."""
        if key not in self.outputs:
            raise KeyError(
                f"stage {self.name} has no output {key!r}; it has {sorted(self.outputs)}"
            )
        return self.folder(run_dir) / self.outputs[key]


def _outputs(**names: str) -> Mapping[str, str]:
    return MappingProxyType({**names, "metrics": METRICS})


SELECT = StageSpec(
    "01_select",
    "01 Select: a diverse subset of raw code",
    ("seed", "corpus", "select"),
    _outputs(
        raw="raw.parquet",
        pool="pool.parquet",
        embeddings="embeddings.npy",
        selected="selected.parquet",
        reserve="reserve.parquet",
        random="random.parquet",
    ),
)
GENERATE = StageSpec(
    "02_generate",
    "02 Generate: LLM-written and LLM-judged instruction data",
    ("seed", "llm", "generate"),
    _outputs(
        candidates="candidates.jsonl",
        codeocean="codeocean.jsonl",
        rejected="rejected.jsonl",
        failed="failed.jsonl",
        alpaca="alpaca.jsonl",
        llm_cache="llm_cache.jsonl",
        example_db="example_db.jsonl",
    ),
    upstream=(SELECT.name,),
    inputs=((SELECT.name, "selected"), (SELECT.name, "reserve")),
)
FINETUNE = StageSpec(
    "03_finetune",
    "03 Fine-tune",
    ("seed", "finetune"),
    _outputs(
        tuned_model="tuned_model.json",
        adapter="adapter",
        model="model",
        merged="merged",
        checkpoints="checkpoints",
        train_log="train_log.jsonl",
        train_metrics="train_metrics.json",
        fingerprint="fingerprint.json",
        model_card="README.md",
        samples="samples.jsonl",
    ),
    upstream=(GENERATE.name,),
    inputs=((GENERATE.name, "codeocean"),),
)
EVALUATE = StageSpec(
    "04_evaluate",
    "04 Evaluate",
    ("seed", "llm", "finetune", "evaluate"),
    _outputs(samples="samples", results="results", scores="scores.json"),
    upstream=(FINETUNE.name,),
    inputs=((FINETUNE.name, "tuned_model"), (FINETUNE.name, "train_metrics")),
)
REPORT = StageSpec(
    "05_report",
    "05 Report",
    ("seed",),
    _outputs(ours_vs_paper="ours_vs_paper.png"),
    upstream=(EVALUATE.name,),
    reads=(SELECT.name, GENERATE.name, FINETUNE.name),
)

STAGES: tuple[StageSpec, ...] = (SELECT, GENERATE, FINETUNE, EVALUATE, REPORT)
BY_NAME: Mapping[str, StageSpec] = MappingProxyType({s.name: s for s in STAGES})


def stage(name_or_number: str) -> StageSpec:
    """A stage by its folder name ("02_generate"), number ("02", "2") or short name ("generate")."""
    key = name_or_number.strip()
    for spec in STAGES:
        short = spec.name.split("_", 1)[1]
        if key in (spec.name, spec.number, short) or (
            key.isdigit() and int(key) == int(spec.number)
        ):
            return spec
    raise KeyError(f"no stage {name_or_number!r}; stages are {', '.join(BY_NAME)}")
