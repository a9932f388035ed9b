"""The vision-tower protocol, the known towers, and ``build_tower`` that turns a spec into one.

A spec is a small JSON-able dict; it is all a model needs to store to rebuild its towers:
``build_tower(tower.spec(), load_weights=False)`` gives the same architecture without touching the
network (the weights then come from the model's own file).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import torch

from tg_encoders.clip_tower import CLIPTower
from tg_encoders.dinov2_tower import DINOv2Tower
from tg_encoders.errors import TowerSpecError

__all__ = [
    "TOWERS",
    "CLIPTower",
    "DINOv2Tower",
    "VisionTower",
    "build_tower",
    "count_parameters",
    "save_tower_weights",
    "tiny_clip_spec",
    "tiny_dinov2_spec",
    "tower_spec",
]


@runtime_checkable
class VisionTower(Protocol):
    """Patch features of a square image: ``(B, 3, S, S)`` pixels in [0, 1] to ``(B, grid*grid, hidden_size)``.

    Each tower normalises its input itself (``mean``/``std``), so one tensor feeds them all.
    Patches are in row-major order (row by row from the top left).
    """

    name: str
    image_size: int
    patch_size: int
    grid: int
    hidden_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def spec(self) -> dict[str, Any]: ...

    def native_state_dict(self) -> dict[str, torch.Tensor]: ...


_BUILDERS = {"clip": CLIPTower, "dinov2": DINOv2Tower}


def build_tower(spec: Mapping[str, Any], load_weights: bool = True) -> VisionTower:
    """The tower a spec describes; ``load_weights=False`` gives random weights and never downloads."""
    if not isinstance(spec, Mapping):
        raise TowerSpecError(f"a tower spec is a dict with a 'type' field, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind not in _BUILDERS:
        raise TowerSpecError(f"tower spec {dict(spec)}: 'type' must be one of {sorted(_BUILDERS)}, got {kind!r}")
    return _BUILDERS[kind](spec, load_weights=load_weights)


def save_tower_weights(tower: VisionTower, path: str | Path) -> Path:
    """Write a tower's weights as a safetensors file in its library's layout.

    The file is what the tower's spec takes as a local ``pretrained`` path, so towers trained here
    (the tiny preset's, say) load like any downloaded checkpoint. Written then renamed: a reader
    never sees half a file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in tower.native_state_dict().items()}
    partial = path.with_name(path.name + ".partial")
    save_file(state, str(partial))
    partial.replace(path)
    return path


def count_parameters(module: torch.nn.Module) -> int:
    """Parameters of a module (works on the ``meta`` device: nothing is allocated)."""
    return sum(p.numel() for p in module.parameters())


def tiny_clip_spec(
    image_size: int = 64, patch_size: int = 8, width: int = 64, depth: int = 2, heads: int = 2, layer: int = -2,
    pos_embed: str = "learned",
) -> dict[str, Any]:
    """A small random CLIP-like tower (same layout as ViT-L/14-336, penultimate block by default)."""
    if width % heads:
        raise TowerSpecError(f"tiny clip: width {width} must be divisible by heads {heads}")
    return {
        "type": "clip",
        "name": "tiny-clip",
        "arch": {"width": width, "layers": depth, "head_width": width // heads, "patch_size": patch_size},
        "image_size": image_size,
        "pretrained": None,
        "layer": layer,
        "pos_embed": pos_embed,
    }


def tiny_dinov2_spec(
    image_size: int = 64, patch_size: int = 8, width: int = 64, depth: int = 2, heads: int = 2, reg_tokens: int = 0,
    pos_embed: str = "learned",
) -> dict[str, Any]:
    """A small random DINOv2-like tower (layer scale, CLS token, optional registers, final norm)."""
    return {
        "type": "dinov2",
        "name": "tiny-dinov2",
        "arch": {
            "embed_dim": width,
            "depth": depth,
            "num_heads": heads,
            "patch_size": patch_size,
            "reg_tokens": reg_tokens,
        },
        "image_size": image_size,
        "pretrained": None,
        "pos_embed": pos_embed,
    }


_KNOWN: dict[str, dict[str, Any]] = {
    "clip-vit-l-14-336": {
        "type": "clip",
        "name": "clip-vit-l-14-336",
        "model": "ViT-L-14-336",
        "pretrained": "openai",
        "layer": -2,
        "quick_gelu": True,
    },
    "dinov2-vit-l-14-336": {
        "type": "dinov2",
        "name": "dinov2-vit-l-14-336",
        "model": "vit_large_patch14_dinov2.lvd142m",
        "image_size": 336,
        "pretrained": True,
        "layer": -1,
    },
    "dinov2-reg4-vit-l-14-336": {
        "type": "dinov2",
        "name": "dinov2-reg4-vit-l-14-336",
        "model": "vit_large_patch14_reg4_dinov2.lvd142m",
        "image_size": 336,
        "pretrained": True,
        "layer": -1,
    },
    "tiny-clip": tiny_clip_spec(),
    "tiny-dinov2": tiny_dinov2_spec(),
}

TOWERS: Mapping[str, Mapping[str, Any]] = MappingProxyType(_KNOWN)
"""Known tower names and their specs (read-only; ``tower_spec(name)`` gives an editable copy)."""


def tower_spec(name: str) -> dict[str, Any]:
    """A copy of a known tower's spec, with a clear error for unknown names."""
    if name not in TOWERS:
        raise TowerSpecError(f"unknown tower {name!r}; known towers: {', '.join(TOWERS)}")
    return copy.deepcopy(dict(TOWERS[name]))
