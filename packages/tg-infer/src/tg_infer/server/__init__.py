"""The OpenAI-compatible HTTP server: ``create_app`` builds it, ``serve`` runs it with uvicorn."""

from __future__ import annotations

from tg_infer.server.app import ServerSettings, create_app, serve

__all__ = ["ServerSettings", "create_app", "serve"]
