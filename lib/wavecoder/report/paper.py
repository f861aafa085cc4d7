"""The WaveCoder paper's numbers and settings, as plain data, for the report to set ours beside.

Source: Yu et al., "WaveCoder: Widespread And Versatile Enhancement For Code Large Language
Models By Instruction Tuning", arXiv:2312.14187v5 (7 Jun 2024, the ACL 2024 version):

- Table 3: pass@1 on HumanEval and MBPP(500);
- Table 4: pass@1 on HumanEvalFix, per language (Python, JavaScript, Java, Go, C++, Rust) and Avg.;
- Table 5: pass@1 on HumanEvalExplain, per language and Avg.;
- Section 3.1: epochs, batch sizes and learning rates; Table 1: the task mix; Appendix A: the
  Alpaca prompt; Appendix D: the benchmarks.

Values are copied as printed (percent, one decimal). A cell the paper does not print is absent
(`None`), never filled in: the paper gives no HumanEvalSynthesize per-language results (only
HumanEval, Python, in Table 3), and Tables 4 and 5 have no row for the CodeLlama-7B/13B base
models (only CodeLLaMa-instruct and CodeLLaMa-CodeAlpaca, which are other models).

Provenance of each number (`SOURCES`): the WaveCoder rows are the authors' own evaluation. The
captions of Tables 3-5 say "We use self-reported scores whenever available": Table 3's base-model
rows (HumanEval, and MBPP for DeepSeek-Coder and CodeLlama) are the base models' own published
scores, and StarCoder's HumanEvalFix/Explain rows are OctoPack's (Muennighoff et al., 2024), so
they are marked reported elsewhere. For DeepSeek-Coder-6.7B's HumanEvalFix/Explain rows and
StarCoder's MBPP(500) 43.3 the paper does not say who measured them (Appendix D: an MBPP(500)
result that was not reported or not used was reproduced with bigcode-evaluation-harness); they are
marked "source not stated". The captions also colour greedy results blue and sampled ones
(n = 200 in Table 3, n = 20 in Tables 4-5) red; the text copy read for this module carries no
colours, so which cells are sampled estimates is not recorded here.

Earlier versions differ: the README of microsoft/WaveCoder and v1-v3 give WaveCoder-DS-6.7B
65.8 / 63.0 / 49.5 / 40.8 (HumanEval, MBPP, Fix avg, Explain avg); v5 gives 64.0 / 62.8 / 49.4 /
41.3, the numbers used here.
"""

from __future__ import annotations

from wavecoder.evaluate.reference import LANGUAGE_TO_NAME, LANGUAGES

PAPER = {
    "arxiv": "2312.14187v5",
    "title": "WaveCoder: Widespread And Versatile Enhancement For Code Large Language Models "
    "By Instruction Tuning",
    "version": "arXiv v5, 7 Jun 2024 (ACL 2024)",
    "url": "https://arxiv.org/abs/2312.14187v5",
}

# the harness's languages and their names: one definition, in evaluation.reference
LANGUAGE_NAMES = LANGUAGE_TO_NAME
HUMANEVALPACK_TASKS = ("synthesize", "fix", "explain")

# Where a number comes from. `elsewhere`: True = the paper took it from another report; False =
# the WaveCoder authors' own evaluation; None = the paper does not say.
SOURCES: dict[str, dict[str, object]] = {
    "table3": {
        "table": "Table 3",
        "elsewhere": False,
        "note": "WaveCoder model, evaluated by the WaveCoder authors",
    },
    "table3-self-reported": {
        "table": "Table 3",
        "elsewhere": True,
        "note": "the base model's own published score (Table 3 uses self-reported scores "
        "whenever available), measured by its authors with their own prompting, not by the "
        "WaveCoder authors",
    },
    "table3-unstated": {
        "table": "Table 3",
        "elsewhere": None,
        "note": "the paper does not say where this base-model MBPP(500) score comes from "
        "(StarCoder's own model card gives MBPP 52.7; Appendix D says unreported MBPP(500) "
        "results were reproduced with bigcode-evaluation-harness); the table's own delta for "
        "WaveCoder-SC-15B, 51.0 (+7.4), implies 43.6, not the 43.3 printed",
    },
    "table4": {
        "table": "Table 4",
        "elsewhere": False,
        "note": "WaveCoder model, evaluated by the WaveCoder authors",
    },
    "table4-octopack": {
        "table": "Table 4",
        "elsewhere": True,
        "note": "taken from OctoPack (Muennighoff et al., 2024), where HumanEvalPack was "
        "introduced (Table 4 uses self-reported scores whenever available)",
    },
    "table4-unstated": {
        "table": "Table 4",
        "elsewhere": None,
        "note": "the paper does not say who measured this base-model row",
    },
    "table5": {
        "table": "Table 5",
        "elsewhere": False,
        "note": "WaveCoder model, evaluated by the WaveCoder authors",
    },
    "table5-octopack": {
        "table": "Table 5",
        "elsewhere": True,
        "note": "taken from OctoPack (Muennighoff et al., 2024), where HumanEvalPack was "
        "introduced (Table 5 uses self-reported scores whenever available)",
    },
    "table5-unstated": {
        "table": "Table 5",
        "elsewhere": None,
        "note": "the paper does not say who measured this base-model row",
    },
}

# The base models the paper fine-tunes, keyed by our name for them: the paper's row names, the
# hub ids that are the same weights, and the per-model training settings of Section 3.1.
MODELS: dict[str, dict[str, object]] = {
    "deepseek-coder-6.7b": {
        "display": "DeepSeek-Coder-6.7B-base",
        "base_name": "DeepseekCoder-6.7B",
        "tuned_name": "WaveCoder-DS-6.7B",
        "hub_ids": ("deepseek-ai/deepseek-coder-6.7b-base",),
        "global_batch_size": 512,
        "learning_rate": 5e-5,
        "parallelism": "FSDP",
    },
    "codellama-7b": {
        "display": "CodeLlama-7B",
        "base_name": "CodeLLaMa-7B",
        "tuned_name": "WaveCoder-CL-7B",
        "hub_ids": ("codellama/CodeLlama-7b-hf", "meta-llama/CodeLlama-7b-hf"),
        "global_batch_size": 256,
        "learning_rate": 2e-5,
        "parallelism": "tensor parallel",
    },
    "codellama-13b": {
        "display": "CodeLlama-13B",
        "base_name": "CodeLLaMa-13B",
        "tuned_name": "WaveCoder-CL-13B",
        "hub_ids": ("codellama/CodeLlama-13b-hf", "meta-llama/CodeLlama-13b-hf"),
        "global_batch_size": 256,
        "learning_rate": 2e-5,
        "parallelism": "tensor parallel",
    },
    "starcoder-15b": {
        "display": "StarCoder-15B",
        "base_name": "StarCoder-15B",
        "tuned_name": "WaveCoder-SC-15B",
        "hub_ids": ("bigcode/starcoder",),
        "global_batch_size": 256,
        "learning_rate": 2e-5,
        "parallelism": "tensor parallel",
    },
}

# Table 3: (HumanEval, MBPP(500)) pass@1, with each row's source.
TABLE3: dict[tuple[str, str], tuple[float, float, str, str]] = {
    # (model, role): (HumanEval, MBPP, source of HumanEval, source of MBPP)
    ("starcoder-15b", "base"): (33.6, 43.3, "table3-self-reported", "table3-unstated"),
    ("starcoder-15b", "tuned"): (50.5, 51.0, "table3", "table3"),
    ("codellama-7b", "base"): (33.5, 41.4, "table3-self-reported", "table3-self-reported"),
    ("codellama-7b", "tuned"): (48.1, 47.2, "table3", "table3"),
    ("codellama-13b", "base"): (36.0, 47.0, "table3-self-reported", "table3-self-reported"),
    ("codellama-13b", "tuned"): (55.4, 49.6, "table3", "table3"),
    ("deepseek-coder-6.7b", "base"): (49.4, 60.6, "table3-self-reported", "table3-self-reported"),
    ("deepseek-coder-6.7b", "tuned"): (64.0, 62.8, "table3", "table3"),
}

# Table 3 prints "(+x)" beside each WaveCoder row; all agree with tuned minus base above except
# WaveCoder-SC-15B's MBPP: 51.0 (+7.4) against StarCoder's printed 43.3 (51.0 - 43.3 = 7.7).
TABLE3_PRINTED_DELTAS = {
    "starcoder-15b": (16.9, 7.4),
    "codellama-7b": (14.6, 5.8),
    "codellama-13b": (19.4, 2.6),
    "deepseek-coder-6.7b": (14.6, 2.2),
}

# Tables 4 (HumanEvalFix) and 5 (HumanEvalExplain): per language in LANGUAGES order, the
# average as printed, and the row's source. CodeLlama base models have no row in either table.
TABLE4: dict[tuple[str, str], tuple[tuple[float, ...], float, str]] = {
    ("starcoder-15b", "base"): ((8.7, 15.7, 13.3, 20.1, 15.6, 6.7), 13.4, "table4-octopack"),
    ("starcoder-15b", "tuned"): ((39.3, 35.1, 34.8, 36.2, 30.2, 22.5), 33.0, "table4"),
    ("codellama-7b", "tuned"): ((41.4, 41.4, 42.0, 47.1, 42.7, 34.7), 41.5, "table4"),
    ("codellama-13b", "tuned"): ((48.8, 48.2, 50.6, 51.8, 45.1, 40.2), 47.4, "table4"),
    ("deepseek-coder-6.7b", "base"): (
        (29.9, 29.2, 39.0, 29.2, 25.0, 21.9),
        29.0,
        "table4-unstated",
    ),
    ("deepseek-coder-6.7b", "tuned"): ((57.9, 52.4, 57.3, 47.5, 45.1, 36.0), 49.4, "table4"),
}
TABLE5: dict[tuple[str, str], tuple[tuple[float, ...], float, str]] = {
    ("starcoder-15b", "base"): ((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), 0.0, "table5-octopack"),
    ("starcoder-15b", "tuned"): ((37.1, 33.3, 40.5, 23.3, 31.8, 19.3), 30.8, "table5"),
    ("codellama-7b", "tuned"): ((41.4, 31.7, 39.0, 25.0, 34.1, 23.2), 32.4, "table5"),
    ("codellama-13b", "tuned"): ((45.7, 42.0, 48.2, 32.3, 38.4, 20.7), 37.9, "table5"),
    ("deepseek-coder-6.7b", "base"): (
        (43.9, 40.2, 37.8, 29.2, 34.1, 22.5),
        34.6,
        "table5-unstated",
    ),
    ("deepseek-coder-6.7b", "tuned"): ((48.2, 47.5, 49.4, 32.3, 48.2, 22.0), 41.3, "table5"),
}

# Settings the paper (and, where the paper is silent, WaveCoder's released scripts) states.
TASK_MIX = {  # Table 1: accepted examples per task
    "generation": 11370,
    "summarization": 3165,
    "repair": 3144,
    "translation": 2236,
}
EXAMPLES = 19915  # abstract and Limitations ("about 20K" elsewhere in the text)
EPOCHS = 3
FINETUNE_METHOD = "full"  # "perform full fine-tuning on whole 20K dataset" (Appendix C)
MAX_SEQ_LENGTH = 2048  # not in the paper's text: --model_max_length in src/script/train.sh
OPTIMIZER = "adafactor"  # not named in the paper: --optim adafactor in src/script/train.sh
PROBLEMS = {"humaneval": 164, "mbpp": 500, "humanevalpack": 164}  # per benchmark (per language)


def average_key(task: str) -> str:
    """The key of a HumanEvalPack task's six-language average in `scores(...)`."""
    return f"humanevalpack-{task}-avg"


def scores(model: str, role: str) -> dict[str, tuple[float, str]]:
    """Every number the paper prints for one model and role ("base" or "tuned"), keyed by our
    benchmark names (`humaneval`, `mbpp`, `humanevalpack-{fix,explain}-LANG`) plus
    `humanevalpack-{fix,explain}-avg` for the printed averages; value: (pass@1 in %, source id).
    A benchmark the paper does not report for this model is absent."""
    out: dict[str, tuple[float, str]] = {}
    row3 = TABLE3.get((model, role))
    if row3 is not None:
        humaneval, mbpp, src_he, src_mbpp = row3
        out["humaneval"] = (humaneval, src_he)
        out["mbpp"] = (mbpp, src_mbpp)
    for task, table in (("fix", TABLE4), ("explain", TABLE5)):
        row = table.get((model, role))
        if row is None:
            continue
        values, avg, source = row
        for lang, value in zip(LANGUAGES, values, strict=True):
            out[f"humanevalpack-{task}-{lang}"] = (value, source)
        out[average_key(task)] = (avg, source)
    return out


def model_for(base_model: str | None) -> str | None:
    """The paper model (a key of MODELS) whose base weights `base_model` names: a hub id the
    paper's base model is published under (case-insensitive), or a key of MODELS itself, or a
    Hugging Face cache folder of such a hub id (`.../models--org--name/...`). Anything else (a
    local folder, another model) has no paper row: None."""
    if not base_model:
        return None
    name = str(base_model).strip().rstrip("/").lower()
    for key, info in MODELS.items():
        ids = [hub.lower() for hub in info["hub_ids"]]  # type: ignore[union-attr]
        if name == key or name in ids:
            return key
        cache_names = ["models--" + hub.replace("/", "--") for hub in ids]
        if any(part in cache_names for part in name.split("/")):
            return key
    return None
