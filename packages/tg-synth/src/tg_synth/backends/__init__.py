"""Pluggable backends: chat (OpenAI-compatible, shapes oracle) and detector (GroundingDINO, shapes oracle)."""

from tg_synth.backends.base import (
    BackendError,
    ChatBackend,
    ChatReply,
    ChatRequest,
    Detector,
    DetectRequest,
    FatalBackendError,
    Usage,
)

__all__ = [
    "BackendError",
    "ChatBackend",
    "ChatReply",
    "ChatRequest",
    "DetectRequest",
    "Detector",
    "FatalBackendError",
    "Usage",
]
