"""Fixtures for tg-infer's tests: a tiny model saved to disk, its predictor, small test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The machine's cores are shared: one thread per process is faster than contending for two.
torch.set_num_threads(1)


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def make_image():
    """``make_image(width, height, seed)``: a deterministic noise picture."""
    return noise_image


def spread_weights(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> None:
    """Redraw the LLM's and the projector's matrices with a wider spread.

    Freshly initialised, the tiny preset answers every prompt with the same token repeated, which
    would make comparisons of answers (batched against alone, server against library) vacuous;
    with wider random weights the answers differ from prompt to prompt and image to image.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (model.language_model, model.projector):
            for p in module.parameters():
                if p.ndim == 2:
                    p.copy_(torch.randn(p.shape, generator=generator) * std)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tg_model.presets import build_model

    model, tokenizer = build_model("tiny")
    spread_weights(model)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def predictor(model_dir: Path):
    from tg_infer.predictor import Predictor

    return Predictor.load(model_dir)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A few small PNGs of different shapes (wide, tall, square)."""
    root = tmp_path_factory.mktemp("images")
    paths = {}
    for name, (w, h, seed) in {"wide": (64, 32, 1), "tall": (30, 50, 2), "square": (40, 40, 3)}.items():
        paths[name] = root / f"{name}.png"
        noise_image(w, h, seed).save(paths[name])
    return paths
