"""Fixtures: a small shapes world written once per session, configs for it, a loopback endpoint.

Helpers are fixtures that return functions, since test modules here are imported without a package.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tg_data.shapes import write_shapes_dataset
from tg_synth.config import SynthConfig, config_from_dict
from tg_synth.loopback import ChatEndpoint, FaultPlan, LoopbackServer, OracleAnswerer

N_SCENES = 16


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(str(root), {"train": N_SCENES}, seed=3, pope_splits=())
    return root


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@pytest.fixture
def config_dict(shapes_root: Path) -> Callable[..., dict[str, Any]]:
    """``config_dict(out, {"qa": {...}})``: a raw config on the session's shapes world (oracle backends)."""

    def make(out: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        base = {
            "progress": False,
            "input": {"kind": "shapes", "shapes_root": str(shapes_root), "shapes_split": "train"},
            "output": {"dir": str(out)},
        }
        return merge(base, extra or {})

    return make


@pytest.fixture
def make_config(config_dict: Callable[..., dict[str, Any]]) -> Callable[..., SynthConfig]:
    def make(out: Path, extra: dict[str, Any] | None = None) -> SynthConfig:
        return config_from_dict(config_dict(out, extra))

    return make


@pytest.fixture
def openai_chat() -> Callable[..., dict[str, Any]]:
    """``openai_chat(base_url, concurrency=4)``: a [backends.*] table for the loopback endpoint."""

    def make(base_url: str, **kw: Any) -> dict[str, Any]:
        return {"kind": "openai", "base_url": base_url, "model": "shapes-oracle", "api_key_env": "",
                "backoff_base_s": 0.005, "backoff_max_s": 0.05, "timeout_s": 5.0, **kw}

    return make


@pytest.fixture
def loopback(shapes_root: Path):
    """``loopback(latency_s=..., faults=FaultPlan(...))``: a started server on 127.0.0.1, stopped after the test."""
    servers: list[LoopbackServer] = []

    def start(latency_s: float = 0.0, faults: FaultPlan | None = None, log_path: Path | None = None) -> LoopbackServer:
        endpoint = ChatEndpoint(OracleAnswerer(shapes_root, "train"), latency_s, faults, log_path)
        server = LoopbackServer(endpoint).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()
