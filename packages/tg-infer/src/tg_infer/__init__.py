"""tg-infer: Inference for TinyGroundingGPT: batched generation, CLI, OpenAI-compatible server, demo, boxes and attention maps."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so that ``tg_infer.cli --help`` stays fast.
_EXPORTS = {
    "Predictor": "tg_infer.predictor",
    "Prepared": "tg_infer.predictor",
    "Request": "tg_infer.requests",
    "Sampling": "tg_infer.requests",
    "Generation": "tg_infer.requests",
    "Answer": "tg_infer.answers",
    "FoundBox": "tg_infer.answers",
    "Grounding": "tg_infer.answers",
    "AttentionMap": "tg_infer.attention",
    "draw_boxes": "tg_infer.draw",
    "InferError": "tg_infer.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tg_infer' has no attribute {name!r}")
