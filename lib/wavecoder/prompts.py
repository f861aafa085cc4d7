"""The one source of the instruction templates that training and evaluation share.

WaveCoder trains on the Alpaca template (tloen/alpaca-lora `templates/alpaca.json`, which its
MBPP(500) script also uses through `Prompter`); bigcode-evaluation-harness calls the same
no-input template `wizardcoder`. Training records which format it used (`PROMPT_FORMATS`), and
evaluation checks a tuned model's prompt style against it.
"""

from __future__ import annotations

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request."
)
ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = ALPACA_PREAMBLE + "\n\n### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_RESPONSE_SPLIT = "### Response:"

# Which evaluation prompt styles match a training prompt format (bigcode's `wizardcoder` and
# WaveCoder's MBPP `wavecoder` are the Alpaca template).
STYLES_FOR_TRAINING_FORMAT: dict[str, tuple[str, ...]] = {
    "alpaca": ("wizardcoder", "wavecoder"),
    "chat_template": ("chat",),
}


def alpaca_prompt(instruction: str, input: str | None = None) -> str:
    """The Alpaca prompt as `Prompter.generate_prompt` builds it: the input variant only when
    `input` is non-empty; nothing is stripped."""
    if input:
        return ALPACA_PROMPT.format(instruction=instruction, input=input)
    return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)


def alpaca_response(output: str) -> str:
    """`Prompter.get_response`: the text after the first response header, stripped."""
    parts = output.split(ALPACA_RESPONSE_SPLIT)
    if len(parts) < 2:
        raise ValueError("the text holds no '### Response:' header")
    return parts[1].strip()


def check_style_matches_training(style: str, training_format: str | None, model: str) -> None:
    """A tuned model is evaluated in the prompt format it was trained with, or it is an error
    naming both."""
    if training_format is None:
        return
    allowed = STYLES_FOR_TRAINING_FORMAT.get(training_format, ())
    if style not in allowed:
        raise ValueError(
            f"evaluate.prompt_style for the {model} model is {style!r}, but stage 03 trained it "
            f"with the {training_format!r} prompt format (matching styles: "
            f"{', '.join(allowed) or 'none'}); set evaluate.prompt_style.{model} accordingly"
        )
