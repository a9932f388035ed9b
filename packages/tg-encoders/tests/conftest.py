"""Tiny tower specs shared by the tests; every tower kind the package supports appears here."""

from __future__ import annotations

import os

import pytest
import torch

from tg_encoders.towers import tiny_clip_spec, tiny_dinov2_spec

# Tests never reach a model hub: a build that tried would fail here instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_TOWER_SPECS = {
    "clip": tiny_clip_spec(depth=3),
    "clip-last-block": tiny_clip_spec(depth=2, layer=-1),
    "dinov2": tiny_dinov2_spec(depth=2),
    "dinov2-registers": tiny_dinov2_spec(depth=2, reg_tokens=4),
}


@pytest.fixture(params=sorted(TINY_TOWER_SPECS), ids=sorted(TINY_TOWER_SPECS))
def tiny_spec(request: pytest.FixtureRequest) -> dict:
    return dict(TINY_TOWER_SPECS[request.param])


@pytest.fixture
def pixels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1234)
    return torch.rand(3, 3, 64, 64, generator=generator)
