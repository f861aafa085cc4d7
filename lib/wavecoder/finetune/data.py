"""Instruction data for fine-tuning: read, check, format, tokenize (loss on the response only).

The Alpaca prompt is the one WaveCoder trained with (its `information` field is the Alpaca
`input`, its `solution` the response). The prompt and the response are tokenized separately and
concatenated, so the label mask is exact at the boundary (tokenizing the joined text and
masking `len(prompt_ids)` tokens can be off by one where BPE merges across the boundary).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wavecoder import prompts
from wavecoder.io import sha256_file

if TYPE_CHECKING:
    from wavecoder.config import StudyParams

IGNORE_INDEX = -100

# field -> accepted names, first match wins (CodeOcean, WaveCoder's own names, Alpaca-likes)
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "query"),
    "input": ("input", "information", "context"),
    "output": ("output", "solution", "response", "completion", "answer"),
}


class DataError(ValueError):
    """The instruction file is missing, empty or malformed; the message names file and line."""


class FinetuneError(ValueError):
    """Bad stage 03 input besides the data file (model, target modules, batch plan); raised
    before training starts."""


@dataclass
class Record:
    instruction: str
    input: str
    output: str
    id: str = ""
    task: str = ""
    language: str = ""
    source: str = "codeocean"


def _pick(obj: dict[str, Any], name: str) -> Any:
    for key in FIELD_ALIASES[name]:
        if key in obj and obj[key] is not None:
            return obj[key]
    return None


def record_from_json(obj: Any, where: str, source: str) -> Record:
    """One JSON object -> Record; a clear error naming `where` (file:line) otherwise."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    values = {}
    for name in FIELD_ALIASES:
        value = _pick(obj, name)
        if name == "input" and value is None:
            value = ""
        if value is None:
            wanted = " or ".join(repr(k) for k in FIELD_ALIASES[name])
            raise DataError(f"{where}: missing field {wanted} (keys present: {sorted(obj)})")
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
        values[name] = value
    if not values["instruction"].strip():
        raise DataError(f"{where}: empty instruction")
    if not values["output"].strip():
        raise DataError(f"{where}: empty output")
    return Record(
        **values,
        id=str(obj.get("id", "")),
        task=str(obj.get("task", "")),
        language=str(obj.get("language", "")),
        source=source,
    )


def load_records(path: str | Path, source: str = "codeocean") -> list[Record]:
    """Read a .jsonl (one object a line) or .json (a list of objects) instruction file.

    Raises DataError naming the file and line for a missing or empty file, a line that is not
    JSON, or an object without instruction/output.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"instruction file not found: {path}")
    text = path.read_text(encoding="utf-8")
    records: list[Record] = []
    if path.suffix == ".json":
        try:
            items = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(items, list):
            raise DataError(f"{path}: expected a JSON list of objects")
        records = [record_from_json(o, f"{path}[{i}]", source) for i, o in enumerate(items)]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            records.append(record_from_json(obj, f"{path}:{number}", source))
    if not records:
        raise DataError(f"instruction file is empty: {path}")
    return records


def load_hub_records(dataset_id: str, split: str, source: str) -> list[Record]:
    """An instruction set from the HF hub (e.g. a CodeAlpaca-20k copy); needs the network."""
    from datasets import load_dataset

    try:
        rows = load_dataset(dataset_id, split=split)
    except Exception as exc:
        raise DataError(f"cannot load dataset '{dataset_id}' from the HF hub: {exc}") from exc
    return [record_from_json(row, f"{dataset_id}[{i}]", source) for i, row in enumerate(rows)]


TASK_SEEDS = "task-seeds"


def task_seed_records() -> list[Record]:
    """The good seed cases of the four task specs (lib/wavecoder/data/tasks), as records."""
    from wavecoder.generate import load_tasks

    records = []
    for name, spec in load_tasks().items():
        for i, example in enumerate(spec.examples):
            if example.get("verdict") != "good":
                continue
            case = example["case"]
            records.append(
                Record(
                    instruction=case["instruction"],
                    input=case.get("information") or "",
                    output=case["solution"],
                    id=f"seed:{name}:{i}",
                    task=name,
                    language=str(example.get("language") or ""),
                    source=TASK_SEEDS,
                )
            )
    return records


def load_mix(path_or_id: str, split: str = "train", base_dir: Path | None = None) -> list[Record]:
    """Records of the set to mix in: `task-seeds` (the task specs' good seed cases), a local
    file when it exists, else a hub dataset id."""
    if path_or_id == TASK_SEEDS:
        return task_seed_records()
    path = Path(path_or_id).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.exists():
        return load_records(path, source=path.stem)
    if path_or_id.startswith((".", "/", "~")) or path_or_id.endswith((".json", ".jsonl")):
        raise DataError(f"mix file not found: {path}")
    return load_hub_records(path_or_id, split, source=path_or_id)


def mix_records(
    main: list[Record], extra: list[Record], max_extra: int | None, seed: int
) -> list[Record]:
    """`main` plus a seeded sample of `extra` (all of it when `max_extra` is None)."""
    if max_extra is not None and len(extra) > max_extra:
        extra = random.Random(seed).sample(extra, max_extra)
    return main + list(extra)


def split_validation(
    records: list[Record], fraction: float, seed: int, max_examples: int | None = None
) -> tuple[list[Record], list[Record]]:
    """Seeded held-out split; at least one training record is always kept."""
    if fraction <= 0 or len(records) < 2:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(records) * fraction))
    if max_examples is not None:
        n_val = min(n_val, max_examples)
    n_val = min(n_val, len(records) - 1)
    held = set(order[:n_val])
    train = [r for i, r in enumerate(records) if i not in held]
    val = [r for i, r in enumerate(records) if i in held]
    return train, val


data_sha256 = sha256_file  # the training file's hash, as model cards name it


def records_sha256(records: list[Record]) -> str:
    """Hash of the training records as used (after mixing), independent of file layout."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(asdict(record), sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------- prompts and tokenization


def alpaca_prompt(record: Record) -> str:
    """The Alpaca prompt (the one evaluation's `wizardcoder` style shows); a blank input is
    no input."""
    return prompts.alpaca_prompt(record.instruction, record.input if record.input.strip() else None)


def chat_prompt(record: Record, tokenizer: Any) -> str:
    """The tokenizer's chat template with the generation prompt; input appended to the user turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "finetune.prompt is 'chat_template' but the tokenizer has no chat template; "
            "use prompt: alpaca"
        )
    content = record.instruction
    if record.input.strip():
        content = f"{record.instruction}\n\n{record.input}"
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def build_prompt(record: Record, style: Literal["alpaca", "chat_template"], tokenizer: Any) -> str:
    return chat_prompt(record, tokenizer) if style == "chat_template" else alpaca_prompt(record)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenizeStats:
    examples: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: int = 0
    prompt_tokens: int = 0
    response_tokens: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)
    dropped_ids: list[str] = field(default_factory=list, repr=False)

    def as_metrics(self) -> dict[str, Any]:
        lengths = sorted(self.lengths)
        mid = lengths[len(lengths) // 2] if lengths else 0
        return {
            "examples": self.examples,
            "kept": self.kept,
            "truncated": self.truncated,
            "dropped": self.dropped,
            "dropped_ids": self.dropped_ids[:20],
            "prompt_tokens": self.prompt_tokens,
            "response_tokens": self.response_tokens,
            "median_length": mid,
            "max_length": lengths[-1] if lengths else 0,
        }


def encode(text: str, tokenizer: Any) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_record(
    record: Record,
    tokenizer: Any,
    max_length: int,
    style: Literal["alpaca", "chat_template"] = "alpaca",
    overlong: Literal["truncate", "drop"] = "truncate",
    min_response_tokens: int = 8,
) -> Example | None:
    """Prompt + response + EOS; labels are -100 on the prompt (and the BOS, if any).

    Too long: with `overlong='truncate'` the response is cut to fit (the prompt is kept whole) as
    long as at least `min_response_tokens` of it remain; otherwise the example is dropped (None).
    """
    prompt_ids = encode(build_prompt(record, style, tokenizer), tokenizer)
    # The chat template already begins with its own special tokens; only Alpaca gets a BOS
    # (when the tokenizer's own settings would add one).
    if style == "alpaca" and getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id:
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    response_ids = encode(record.output, tokenizer)
    if tokenizer.eos_token_id is not None:
        response_ids = response_ids + [tokenizer.eos_token_id]
    truncated = False
    if len(prompt_ids) + len(response_ids) > max_length:
        room = max_length - len(prompt_ids)
        if overlong == "drop" or room < min(min_response_tokens, len(response_ids)):
            return None
        response_ids = response_ids[:room]
        truncated = True
    return Example(
        input_ids=prompt_ids + response_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + response_ids,
        truncated=truncated,
    )


def tokenize_records(
    records: list[Record],
    tokenizer: Any,
    max_length: int,
    style: Literal["alpaca", "chat_template"] = "alpaca",
    overlong: Literal["truncate", "drop"] = "truncate",
    min_response_tokens: int = 8,
    progress: bool = True,
) -> tuple[list[Example], TokenizeStats]:
    from tqdm.auto import tqdm

    stats = TokenizeStats()
    examples = []
    for record in tqdm(records, desc="tokenize", disable=not progress, leave=False):
        stats.examples += 1
        example = tokenize_record(
            record, tokenizer, max_length, style, overlong, min_response_tokens
        )
        if example is None:
            stats.dropped += 1
            stats.dropped_ids.append(record.id)
            continue
        stats.kept += 1
        stats.truncated += int(example.truncated)
        n_prompt = sum(1 for label in example.labels if label == IGNORE_INDEX)
        stats.prompt_tokens += n_prompt
        stats.response_tokens += len(example) - n_prompt
        stats.lengths.append(len(example))
        examples.append(example)
    return examples, stats


def masked_view(example: Example, tokenizer: Any) -> dict[str, str]:
    """The text the loss ignores (prompt) and the text it trains on (response), decoded."""
    n_prompt = sum(1 for label in example.labels if label == IGNORE_INDEX)
    return {
        "prompt (no loss)": tokenizer.decode(example.input_ids[:n_prompt]),
        "response (loss)": tokenizer.decode(example.input_ids[n_prompt:]),
    }


def composition(records: list[Record]) -> dict[str, dict[str, int]]:
    """Counts by task, language and source (for the notebook's table and metrics)."""
    return {
        "task": dict(Counter(r.task or "?" for r in records).most_common()),
        "language": dict(Counter(r.language or "?" for r in records).most_common()),
        "source": dict(Counter(r.source for r in records).most_common()),
    }


def fingerprint_inputs(params: StudyParams) -> dict[str, str]:
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
