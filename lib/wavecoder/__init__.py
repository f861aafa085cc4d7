"""WaveCoder study: helpers behind the stage notebooks."""

from . import config, corpus, embed
from .config import ParamsError, StudyParams, load_params
from .paths import stage_dir

__all__ = ["ParamsError", "StudyParams", "config", "corpus", "embed", "load_params", "stage_dir"]
__version__ = "0.1.0"
