"""Stage 03 as notebooks/03_finetune.ipynb runs it (and `python -m wavecoder.finetune.train`,
also under `accelerate launch`): read and prepare the instruction data, train, save the
adapter or model with its `tuned_model.json` (`wavecoder.finetune.tuned.TunedModel`), the
metrics and the model card.

Layout of `out` (FINETUNE.outputs): `adapter/` (LoRA) or `model/` (full), optional `merged/`,
`checkpoints/` (while training; resumed after a kill), `train_log.jsonl`, `tuned_model.json`
(what stages 04 and 05 load), `train_metrics.json`. Checks run before anything heavy: the data
file, the base model, the LoRA target modules, the batch plan.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from wavecoder import models
from wavecoder.config import StudyParams
from wavecoder.finetune import collate as C
from wavecoder.finetune import data as D
from wavecoder.finetune.batch import BatchPlan, launch_world_size, plan_batch
from wavecoder.finetune.data import FinetuneError
from wavecoder.finetune.model import (
    load_model,
    load_tokenizer,
    parameter_counts,
    recast_saved_model,
    saved_dtype,
)
from wavecoder.finetune.plots import read_log
from wavecoder.finetune.trainer import (
    CountingTrainer,
    TokenCounter,
    TrainLogCallback,
    checkpoint_to_resume,
    main_process_first,
    run_fingerprint,
    training_arguments,
)
from wavecoder.finetune.tuned import TunedModel
from wavecoder.io import write_json
from wavecoder.stages import FINETUNE, GENERATE

# ---------------------------------------------------------------- data


@dataclass
class PreparedData:
    data_path: Path
    train_records: list[D.Record]
    val_records: list[D.Record]
    train_rows: list[C.Row]
    val_rows: list[C.Row]
    train_stats: D.TokenizeStats
    val_stats: D.TokenizeStats
    data_sha256: str
    records_sha256: str
    packed: bool
    expected_non_padding: float
    mixed_in: int = 0
    notes: list[str] = field(default_factory=list)  # what the reader should know (an empty file)

    @property
    def train_tokens(self) -> int:
        return sum(len(r) for r in self.train_rows)

    @property
    def train_examples(self) -> int:
        """Examples in the training rows (after dropping overlong ones)."""
        return sum(r.n_examples for r in self.train_rows)

    def summary_rows(self) -> list[dict[str, str]]:
        """A two-column table for the notebook."""
        tok = self.train_stats
        return [
            {"": "records (train / held-out)", "value": f"{len(self.train_records)} / "
             f"{len(self.val_records)}"},
            {"": "mixed in from another set", "value": str(self.mixed_in)},
            {"": "truncated / dropped (train)", "value": f"{tok.truncated} / {tok.dropped}"},
            {"": "tokens: prompt / response (train)",
             "value": f"{tok.prompt_tokens:,} / {tok.response_tokens:,}"},
            {"": "rows" + (" (packed)" if self.packed else ""),
             "value": f"{len(self.train_rows)} ({self.train_tokens:,} tokens)"},
            {"": "expected non-padding fraction", "value": f"{self.expected_non_padding:.3f}"},
        ]  # fmt: skip

    def metrics(self) -> dict[str, Any]:
        return {
            "data_file": str(self.data_path),
            "data_sha256": self.data_sha256,
            "records_sha256": self.records_sha256,
            "train_records": len(self.train_records),
            "validation_records": len(self.val_records),
            "mixed_in": self.mixed_in,
            "train_rows": len(self.train_rows),
            "validation_rows": len(self.val_rows),
            "train_tokens": self.train_tokens,
            "packing": self.packed,
            "expected_non_padding_fraction": round(self.expected_non_padding, 4),
            "train_tokenize": self.train_stats.as_metrics(),
            "validation_tokenize": self.val_stats.as_metrics(),
            "composition": D.composition(self.train_records),
            "notes": self.notes,
        }


def default_data_path(params: StudyParams, out: str | Path) -> Path:
    """finetune.data_file, or stage 02's codeocean.jsonl beside this stage's folder."""
    if params.finetune.data_file:
        return params.resolve_path(params.finetune.data_file)
    return GENERATE.path(Path(out).resolve().parent, "codeocean")


def read_instructions(data_path: str | Path, mix_with: str | None = None) -> list[D.Record]:
    """The training records, with a hint when stage 02's output is simply not there yet.

    An empty file is an error, unless `mix_with` (finetune.mix_with) names a set to mix in:
    then there are no records here and the mix alone trains (the smoke preset's case, when
    stage 02's tiny model accepted nothing); `prepare_data` notes it.
    """
    data_path = Path(data_path)
    if not data_path.exists() and data_path.parent.name == GENERATE.name:
        raise D.DataError(
            f"instruction file not found: {data_path}; run stage 02 first "
            "(wavecoder run PARAMS --stages 02) or set finetune.data_file"
        )
    if mix_with and data_path.is_file() and not data_path.read_text(encoding="utf-8").strip():
        return []
    return D.load_records(data_path)


def prepare_data(
    params: StudyParams, tokenizer: Any, data_path: str | Path, progress: bool = True
) -> PreparedData:
    """Read, check, mix, split, tokenize and (optionally) pack the instruction data."""
    ft = params.finetune
    data_path = Path(data_path)
    records = read_instructions(data_path, ft.mix_with)
    main_count = len(records)
    notes = []
    if ft.mix_with:
        extra = D.load_mix(ft.mix_with, ft.mix_split, Path(params.base_dir or "."))
        records = D.mix_records(records, extra, ft.mix_max_examples, params.seed)
        if not records:
            raise D.DataError(
                f"instruction file is empty: {data_path}, and finetune.mix_with={ft.mix_with!r} "
                "gave no records either"
            )
        if not main_count:
            notes.append(
                f"instruction file is empty: {data_path}; trained on the {len(records)} "
                f"records mixed in from finetune.mix_with={ft.mix_with!r} alone"
            )
    train_records, val_records = D.split_validation(
        records, ft.validation_fraction, params.seed, ft.validation_max
    )
    common = dict(
        tokenizer=tokenizer,
        max_length=ft.max_seq_length,
        style=ft.prompt,
        overlong=ft.overlong,
        min_response_tokens=ft.min_response_tokens,
        progress=progress,
    )
    train_examples, train_stats = D.tokenize_records(train_records, **common)
    val_examples, val_stats = D.tokenize_records(val_records, **common)
    if not train_examples:
        raise FinetuneError(
            f"{data_path}: all {len(train_records)} training examples are longer than "
            f"finetune.max_seq_length={ft.max_seq_length} and were dropped; raise max_seq_length"
        )
    if ft.packing:
        train_rows = C.pack_examples(train_examples, ft.max_seq_length, params.seed)
        val_rows = C.pack_examples(val_examples, ft.max_seq_length, params.seed)
    else:
        train_rows, val_rows = C.single_rows(train_examples), C.single_rows(val_examples)
    expected = C.non_padding_fraction(
        [len(r) for r in train_rows], ft.batch_size, params.seed, epochs=1
    )
    return PreparedData(
        data_path=data_path,
        train_records=train_records,
        val_records=val_records,
        train_rows=train_rows,
        val_rows=val_rows,
        train_stats=train_stats,
        val_stats=val_stats,
        data_sha256=D.data_sha256(data_path),
        records_sha256=D.records_sha256(records),
        packed=ft.packing,
        expected_non_padding=expected,
        mixed_in=len(records) - main_count,
        notes=notes,
    )


# ---------------------------------------------------------------- the run


@dataclass
class FinetuneResult:
    out_dir: str
    method: str
    base_model: str
    base_model_path: str
    adapter_path: str | None
    model_path: str | None
    merged_path: str | None
    global_step: int
    resumed_from: int | None
    first_loss: float | None
    last_loss: float | None
    first_eval_loss: float | None
    last_eval_loss: float | None
    tokens_per_s: float
    non_padding_fraction: float
    train_seconds: float
    parameters: dict[str, int]
    data: dict[str, Any] = field(default_factory=dict)
    # how it ran: 'NO' (one process), 'MULTI_GPU'/'MULTI_CPU' (DDP) or 'FSDP', on how many
    distributed: str = "NO"
    processes: int = 1
    # the optimizer step as planned and achieved (BatchPlan.as_metrics)
    batch: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> str:
        loss = (
            f"loss {self.first_loss:.3f} -> {self.last_loss:.3f}"
            if self.first_loss is not None and self.last_loss is not None
            else "loss n/a"
        )
        held = (
            f", held-out {self.first_eval_loss:.3f} -> {self.last_eval_loss:.3f}"
            if self.first_eval_loss is not None and self.last_eval_loss is not None
            else ""
        )
        return (
            f"{self.method} on {self.data.get('train_records', '?')} examples, "
            f"{self.global_step} steps: {loss}{held}; {self.tokens_per_s:,.0f} tok/s"
        )


def _loss_ends(log: list[dict[str, Any]], kind: str, key: str) -> tuple[float | None, float | None]:
    values = [e[key] for e in log if e.get("kind") == kind and e.get(key) is not None]
    return (values[0], values[-1]) if values else (None, None)


def finetune(
    params: StudyParams,
    out: str | Path,
    data_path: str | Path | None = None,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
    prepared: PreparedData | None = None,
) -> FinetuneResult:
    """Train as params say; write adapter/model, logs, model card and tuned_model.json.

    Checks run before anything heavy: the data file (missing, empty, malformed line), the base
    model (path or id), the LoRA target modules. Resumes from `out/checkpoints/` when the last
    run with the same params and data was interrupted.
    """
    from transformers import set_seed

    ft = params.finetune
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if ft.torch_threads:
        torch.set_num_threads(ft.torch_threads)
    data_path = Path(data_path) if data_path else default_data_path(params, out)
    if prepared is None:
        # cheap checks first: the data file, before the model is converted or loaded
        read_instructions(data_path, ft.mix_with)
    try:
        with main_process_first():
            model_path = models.resolve_base_model(
                ft.base_model, params.resolve_path(ft.model_cache)
            )
    except models.ModelResolutionError as exc:
        raise FinetuneError(f"finetune.base_model: {exc}") from None
    tokenizer = load_tokenizer(model_path)
    if prepared is None:
        prepared = prepare_data(params, tokenizer, data_path, progress)
        if int(os.environ.get("RANK", "0")) == 0:
            for note in prepared.notes:
                print(f"note: {note}", file=sys.stderr)
    has_eval = bool(prepared.val_rows)
    plan = plan_batch(
        ft, launch_world_size(), prepared.train_examples, len(prepared.train_rows), prepared.packed
    )
    args = training_arguments(
        ft, out, params.seed, has_eval, progress, gradient_accumulation=plan.gradient_accumulation
    )
    if args.world_size != plan.processes:
        raise FinetuneError(
            f"the batch was planned for {plan.processes} processes (WORLD_SIZE) but the Trainer "
            f"runs on {args.world_size}"
        )
    if args.process_index == 0:
        print(f"finetune: {plan.describe()}", file=sys.stderr)
    set_seed(params.seed)
    model = load_model(model_path, ft)
    counts = parameter_counts(model)

    fingerprint = run_fingerprint(params, prepared.records_sha256, model_path)
    checkpoints = out / FINETUNE.outputs["checkpoints"]
    with args.main_process_first(desc="checkpoint folder"):
        resume_from = checkpoint_to_resume(
            checkpoints, fingerprint, ft.resume, is_main=args.process_index == 0
        )
    counter = TokenCounter()
    logger = TrainLogCallback(
        out / FINETUNE.outputs["train_log"], counter, is_main=args.process_index == 0
    )
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=C.RowDataset(prepared.train_rows),
        eval_dataset=C.RowDataset(prepared.val_rows) if has_eval else None,
        data_collator=C.Collator(tokenizer.pad_token_id, packed=prepared.packed),
        processing_class=tokenizer,
        callbacks=[logger, *callbacks],
        counter=counter,
    )
    tick = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - tick

    tuned = save_outputs(trainer, tokenizer, params, prepared, model_path, out, plan)
    log = read_log(out / FINETUNE.outputs["train_log"])
    first_loss, last_loss = _loss_ends(log, "train", "loss")
    first_eval, last_eval = _loss_ends(log, "eval", "eval_loss")
    result = FinetuneResult(
        out_dir=str(out),
        method=ft.method,
        base_model=ft.base_model,
        base_model_path=str(model_path),
        global_step=trainer.state.global_step,
        resumed_from=logger.resumed_from,
        first_loss=first_loss,
        last_loss=last_loss,
        first_eval_loss=first_eval,
        last_eval_loss=last_eval,
        tokens_per_s=logger.steady_tokens_per_s(skip=1 if len(logger.step_seconds) > 1 else 0),
        non_padding_fraction=counter.non_padding_fraction,
        train_seconds=seconds,
        parameters=counts,
        distributed=trainer.accelerator.distributed_type.value,
        processes=args.world_size,
        data=prepared.metrics(),
        batch=plan.as_metrics(),
        **{f"{key}_path": _path_str(tuned.path(key)) for key in ("adapter", "model", "merged")},
    )
    if args.process_index == 0:
        write_json(out / FINETUNE.outputs["train_metrics"], asdict(result))
        write_model_card(result, params, out)
        if not ft.keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def _path_str(path: Path | None) -> str | None:
    return str(path) if path else None


def save_outputs(
    trainer: Trainer,
    tokenizer: Any,
    params: StudyParams,
    prepared: PreparedData,
    model_path: Path,
    out: Path,
    plan: BatchPlan | None = None,
) -> TunedModel:
    """Save the adapter (or the full model), optionally the merged model, and the TunedModel
    record of them (tuned_model.json, written by the main process)."""
    ft = params.finetune
    out = Path(out).resolve()
    saved = "adapter" if ft.method == "lora" else "model"
    target = out / FINETUNE.outputs[saved]
    trainer.save_model(str(target))
    dtype = saved_dtype(ft, model_path)
    merged_dir = (
        out / FINETUNE.outputs["merged"] if ft.method == "lora" and ft.merge_adapter else None
    )
    tuned = TunedModel(
        method=ft.method,
        base_model=ft.base_model,
        base_model_path=str(Path(model_path).resolve()),
        prompt=ft.prompt,
        max_seq_length=ft.max_seq_length,
        dtype=str(dtype).removeprefix("torch."),
        data_sha256=prepared.data_sha256,
        global_step=trainer.state.global_step,
        optimizer=ft.optimizer,
        batch=plan.as_metrics() if plan else None,
        folder=out,
        **{saved: str(target)},
        merged=str(merged_dir) if merged_dir else None,
    )
    if trainer.args.process_index != 0:
        return tuned
    tokenizer.save_pretrained(target)
    if ft.method == "full":
        recast_saved_model(target, dtype)
    if merged_dir is not None:
        trainer.model.merge_and_unload().to(dtype).save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
    tuned.save(out)
    return tuned


# ---------------------------------------------------------------- model card


def batch_line(batch: dict[str, Any]) -> str:
    if not batch:
        return "n/a"
    rows = f"{batch['rows_per_step']} rows a step"
    if not batch.get("global_batch_size"):
        return rows
    return (
        f"{batch['examples_per_step']} examples a step on average (asked "
        f"{batch['global_batch_size']}), {rows}"
    )


def write_model_card(result: FinetuneResult, params: StudyParams, out: Path) -> Path:
    """README.md with the params, the data hash and the results, in each saved model folder."""
    import yaml

    ft = params.finetune.model_dump(mode="json")
    data = result.data
    folder = result.adapter_path or result.model_path
    lines = [
        "---",
        yaml.safe_dump(
            {
                "base_model": result.base_model,
                "library_name": "peft" if result.method == "lora" else "transformers",
                "tags": ["wavecoder", "codeocean", "instruction-tuning", result.method],
            },
            sort_keys=False,
        ).strip(),
        "---",
        "",
        f"# WaveCoder-style instruction tune of `{result.base_model}` ({result.method})",
        "",
        "Trained by stage 03 of the WaveCoder study on CodeOcean-style instruction data "
        "(Alpaca prompt, loss on the response only).",
        "",
        "## Data",
        "",
        f"- file: `{data.get('data_file')}`",
        f"- sha256: `{data.get('data_sha256')}`",
        f"- records hash (after mixing): `{data.get('records_sha256')}`",
        f"- training / held-out records: {data.get('train_records')} / "
        f"{data.get('validation_records')} (mixed in: {data.get('mixed_in')})",
        f"- truncated / dropped (train): {data.get('train_tokenize', {}).get('truncated')} / "
        f"{data.get('train_tokenize', {}).get('dropped')}",
        f"- packing: {data.get('packing')}; non-padding fraction {result.non_padding_fraction:.3f}",
        *(f"- note: {note}" for note in data.get("notes", [])),
        "",
        "## Results",
        "",
        f"- optimizer steps: {result.global_step}"
        + (f" (resumed from step {result.resumed_from})" if result.resumed_from else ""),
        f"- train loss: {result.first_loss} -> {result.last_loss}",
        f"- held-out loss: {result.first_eval_loss} -> {result.last_eval_loss}",
        f"- throughput: {result.tokens_per_s:,.0f} non-padding tokens/s "
        f"({result.processes} process{'es' if result.processes > 1 else ''}, "
        f"distributed: {result.distributed})",
        f"- parameters: {result.parameters['trainable']:,} trainable of "
        f"{result.parameters['total']:,}",
        f"- optimizer: {params.finetune.optimizer}; batch: {batch_line(result.batch)}",
        "",
        "## Params (`finetune` section, seed " + str(params.seed) + ")",
        "",
        "```yaml",
        yaml.safe_dump(ft, sort_keys=True).strip(),
        "```",
        "",
        "## Load",
        "",
        "```python",
    ]
    if result.method == "lora":
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'base = AutoModelForCausalLM.from_pretrained("{result.base_model_path}")',
            f'model = PeftModel.from_pretrained(base, "{result.adapter_path}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{result.adapter_path}")',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'model = AutoModelForCausalLM.from_pretrained("{result.model_path}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{result.model_path}")',
        ]
    lines += ["```", ""]
    text = "\n".join(lines)
    written = []
    for target in [folder, result.merged_path]:
        if target:
            path = Path(target) / FINETUNE.outputs["model_card"]
            path.write_text(text)
            written.append(path)
    return written[0] if written else out
