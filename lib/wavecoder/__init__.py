"""WaveCoder study: helpers behind the stage notebooks, one package per stage
(select, generate, finetune, evaluate, report) beside the shared core (config, runner,
stages, io, prompts, llm, cli)."""

from wavecoder.config import ParamsError, StudyParams, load_params
from wavecoder.io import stage_dir, write_metrics

__all__ = ["ParamsError", "StudyParams", "load_params", "stage_dir", "write_metrics"]
__version__ = "0.1.0"
