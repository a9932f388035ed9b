"""Multi-scale fusion: several towers read the same pixels, their patch features meet per patch.

CLIP contributes semantics aligned with text, DINOv2 fine spatial detail; concatenating their
features patch by patch (1024 + 1024 channels on a 24 x 24 grid for the real towers) gives the
projector both. The towers are frozen in every training stage, so the encoder keeps them frozen
and in eval mode unless asked otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tg_encoders.errors import GridMismatchError, TowerSpecError
from tg_encoders.towers import VisionTower, build_tower, tiny_clip_spec, tiny_dinov2_spec, tower_spec


class MultiScaleEncoder(nn.Module):
    """Runs every tower on one ``(B, 3, S, S)`` batch in [0, 1] and concatenates per patch.

    Output: ``(B, grid*grid, hidden_size)`` with ``hidden_size`` the sum of the towers' widths, in
    the order of ``towers``. ``resample=True`` bilinearly resamples every tower's feature map to
    the first tower's grid; otherwise differing grids are an error.
    """

    def __init__(self, towers: Sequence[VisionTower], resample: bool = False) -> None:
        super().__init__()
        towers = list(towers)
        if not towers:
            raise TowerSpecError("MultiScaleEncoder needs at least one tower")
        for i, tower in enumerate(towers):
            if not isinstance(tower, nn.Module) or not isinstance(tower, VisionTower):
                raise TowerSpecError(
                    f"tower {i} ({type(tower).__name__}) is not a VisionTower module; build towers "
                    "with build_tower(spec)"
                )
        sizes = {f"{i}:{t.name}": t.image_size for i, t in enumerate(towers)}
        if len(set(sizes.values())) > 1:
            raise GridMismatchError(
                f"towers read different image sizes {sizes}; one pixel tensor feeds them all, so give "
                "every tower the same 'image_size' in its spec"
            )
        grids = {f"{i}:{t.name}": t.grid for i, t in enumerate(towers)}
        if len(set(grids.values())) > 1 and not resample:
            raise GridMismatchError(
                f"towers give different patch grids {grids} (grid = image_size / patch_size); choose "
                "sizes with equal grids, or pass resample=True to resample every feature map to the "
                f"first tower's {towers[0].grid}x{towers[0].grid} grid"
            )
        self.towers = nn.ModuleList(towers)  # type: ignore[arg-type]
        self.resample = resample
        self.image_size = towers[0].image_size
        self.grid = towers[0].grid
        self.num_patches = self.grid * self.grid
        self.hidden_size = sum(t.hidden_size for t in towers)
        self.frozen = False
        self.freeze()

    @property
    def widths(self) -> list[int]:
        """Channel count each tower contributes, in order (its slice of the concatenation)."""
        return [t.hidden_size for t in self.towers]

    def specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self.towers]

    def freeze(self) -> MultiScaleEncoder:
        """No gradients into the towers, and eval mode (no dropout) whatever ``train()`` is called with."""
        self.requires_grad_(False)
        self.frozen = True
        self.towers.eval()
        return self

    def unfreeze(self) -> MultiScaleEncoder:
        """Let the towers train (gradients on; they follow ``train()``/``eval()`` again)."""
        self.requires_grad_(True)
        self.frozen = False
        self.towers.train(self.training)
        return self

    def train(self, mode: bool = True) -> MultiScaleEncoder:
        super().train(mode)
        if self.frozen:
            self.towers.eval()
        return self

    def _to_grid(self, features: torch.Tensor, grid: int) -> torch.Tensor:
        b, n, d = features.shape
        source = round(n**0.5)
        fmap = features.transpose(1, 2).reshape(b, d, source, source)
        fmap = F.interpolate(fmap, size=(grid, grid), mode="bilinear", align_corners=False)
        return fmap.reshape(b, d, grid * grid).transpose(1, 2)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        outputs = []
        for tower in self.towers:
            features = tower(pixels)
            if tower.grid != self.grid:
                features = self._to_grid(features, self.grid)
            outputs.append(features)
        device_type = pixels.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
        else:
            dtype = outputs[0].dtype
            for out in outputs[1:]:
                dtype = torch.promote_types(dtype, out.dtype)
        return torch.cat([out.to(dtype) for out in outputs], dim=-1)


def build_encoder(
    specs: Sequence[Mapping[str, Any]], load_weights: bool = True, resample: bool = False
) -> MultiScaleEncoder:
    """An encoder from tower specs (``load_weights=False``: random weights, never downloads)."""
    if isinstance(specs, Mapping) or not isinstance(specs, Sequence):
        raise TowerSpecError("build_encoder takes a list of tower specs (dicts), one per tower")
    return MultiScaleEncoder([build_tower(s, load_weights=load_weights) for s in specs], resample=resample)


def tiny_encoder_specs(
    image_size: int = 64, patch_size: int = 8, width: int = 64, depth: int = 2, heads: int = 2,
    pos_embed: str = "learned",
) -> list[dict[str, Any]]:
    """A tiny random CLIP-like + DINOv2-like pair with the same grid, for the ``tiny`` preset and tests.

    ``pos_embed="sincos"`` gives both towers fixed 2D sine-cosine patch positions instead of
    untrained random ones, so patch features say where they are, as pretrained towers' do.
    """
    if image_size % patch_size:
        raise TowerSpecError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    arch = {"image_size": image_size, "patch_size": patch_size, "width": width, "depth": depth, "heads": heads,
            "pos_embed": pos_embed}
    return [tiny_clip_spec(**arch), tiny_dinov2_spec(**arch)]


def real_encoder_specs(
    image_size: int = 336,
    clip_pretrained: str | None = "openai",
    dinov2_pretrained: bool | str | None = True,
) -> list[dict[str, Any]]:
    """CLIP ViT-L/14-336 (OpenAI, penultimate block) + DINOv2-L/14 (LVD-142M): 24x24 x 2048 at 336.

    ``*_pretrained`` take a local checkpoint path instead of the hub weights; another
    ``image_size`` (a multiple of 14) resamples both towers' position embeddings.
    """
    if image_size % 14:
        raise TowerSpecError(f"image_size {image_size} must be a multiple of the towers' patch size 14")
    clip, dinov2 = tower_spec("clip-vit-l-14-336"), tower_spec("dinov2-vit-l-14-336")
    clip.update(image_size=image_size, pretrained=clip_pretrained)
    dinov2.update(image_size=image_size, pretrained=dinov2_pretrained)
    return [clip, dinov2]


_ENCODERS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "clip-dinov2-l14-336": real_encoder_specs,
    "tiny": tiny_encoder_specs,
}
ENCODERS: Mapping[str, Callable[[], list[dict[str, Any]]]] = MappingProxyType(_ENCODERS)
"""Known encoder names and the functions giving their tower specs."""


def encoder_specs(name: str) -> list[dict[str, Any]]:
    if name not in ENCODERS:
        raise TowerSpecError(f"unknown encoder {name!r}; known encoders: {', '.join(ENCODERS)}")
    return ENCODERS[name]()
