"""tg-synth: the multi-scale fine-grained enhancement data synthesis pipeline of TinyGroundingGPT.

Per image: object recognition (L1) -> grounding (S1) -> relation extraction (L2) -> QA generation
(stage-2 fine-grained QAs, stage-3 grounding conversations and descriptions) -> filters; every step
cached and resumable, backends pluggable (OpenAI-compatible chat, GroundingDINO, shapes oracles).
"""

from tg_synth.config import ConfigError, SynthConfig, config_from_dict, load_config
from tg_synth.run import build_backends, run
from tg_synth.status import read_status

__version__ = "0.1.0"

__all__ = ["ConfigError", "SynthConfig", "build_backends", "config_from_dict", "load_config", "read_status", "run"]
