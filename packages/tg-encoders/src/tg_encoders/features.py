"""Patch features on disk: one safetensors file that says what it holds.

Besides the ``(N, grid*grid, D)`` features, the file records the towers' specs, the grid, each
tower's channel slice and every image's padding geometry, so boxes in the project's frame can be
mapped onto the patches without the original images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tg_data.box import PadGeometry
from tg_encoders.errors import EncoderError

FEATURES_FORMAT = "tg-encoders/features/v1"
LAYOUT = "features[i, r * grid + c, :] is the patch at row r, column c of image i's padded square"


@dataclass
class FeatureFile:
    features: torch.Tensor  # (N, grid*grid, hidden_size)
    geometry: list[PadGeometry]
    images: list[str]
    specs: list[dict[str, Any]]
    grid: int
    image_size: int
    widths: list[int]

    @property
    def hidden_size(self) -> int:
        return int(self.features.shape[-1])


def write_features(
    path: str | Path,
    features: torch.Tensor,
    geometry: Sequence[PadGeometry],
    images: Sequence[str],
    specs: Sequence[dict[str, Any]],
    grid: int,
    image_size: int,
    widths: Sequence[int],
) -> None:
    n = features.shape[0]
    if features.ndim != 3 or len(geometry) != n or len(images) != n:
        raise EncoderError(
            f"features {tuple(features.shape)} need one geometry and one image name per row "
            f"(got {len(geometry)} and {len(images)})"
        )
    if features.shape[1] != grid * grid or features.shape[2] != sum(widths):
        raise EncoderError(
            f"features {tuple(features.shape)} do not match grid {grid} and tower widths {list(widths)}"
        )
    sizes = torch.tensor([[g.width, g.height] for g in geometry], dtype=torch.int64).reshape(n, 2)
    metadata = {
        "format": FEATURES_FORMAT,
        "layout": LAYOUT,
        "images": json.dumps(list(images)),
        "geometry": json.dumps(
            [
                {"width": g.width, "height": g.height, "side": g.side, "offset_x": g.offset_x, "offset_y": g.offset_y}
                for g in geometry
            ]
        ),
        "specs": json.dumps(list(specs)),
        "grid": str(grid),
        "image_size": str(image_size),
        "hidden_size": str(sum(widths)),
        "widths": json.dumps(list(widths)),
    }
    save_file(
        {"features": features.detach().contiguous().cpu(), "image_sizes": sizes},
        str(path),
        metadata=metadata,
    )


def read_features(path: str | Path) -> FeatureFile:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FEATURES_FORMAT:
                raise EncoderError(
                    f"{path} is not a tg-encoders features file (format {metadata.get('format')!r}); "
                    "write one with `tg-encoders embed`"
                )
            features = f.get_tensor("features")
    except EncoderError:
        raise
    except Exception as e:  # safetensors reports unreadable files with its own error type
        raise EncoderError(f"cannot read features file {path}: {e}") from e
    geometry = [PadGeometry(g["width"], g["height"]) for g in json.loads(metadata["geometry"])]
    return FeatureFile(
        features=features,
        geometry=geometry,
        images=json.loads(metadata["images"]),
        specs=json.loads(metadata["specs"]),
        grid=int(metadata["grid"]),
        image_size=int(metadata["image_size"]),
        widths=json.loads(metadata["widths"]),
    )
