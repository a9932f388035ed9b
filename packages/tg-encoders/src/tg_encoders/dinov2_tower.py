"""The DINOv2 image tower on timm: normed patch tokens of the last block, CLS and registers dropped.

timm builds the ViT at the requested input size and resamples the position embeddings of a
checkpoint made at another size (DINOv2 ships at 518; the model runs at 336 so that its grid
matches CLIP ViT-L/14-336). Weights come from timm's hub, or a local file in timm's format
(safetensors or a torch pickle), the original DINOv2 release format included.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tg_encoders.errors import TowerSpecError, WeightsError
from tg_encoders.processing import IMAGENET_MEAN, IMAGENET_STD
from tg_encoders.tower_base import (
    TowerBase,
    block_index,
    check_keys,
    exactly_one_source,
    image_size_of,
    local_checkpoint,
    set_patch_positions,
)

DINOV2_SPEC_FIELDS = ("type", "name", "model", "arch", "image_size", "pretrained", "layer", "mean", "std", "pos_embed")
DINOV2_ARCH_FIELDS = ("embed_dim", "depth", "num_heads", "patch_size", "reg_tokens", "mlp_ratio", "init_values")
TIMM_CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth", "pytorch_model.pth")
# timm entry points whose DINOv2 layout (layer scale, class token, registers) small arches reuse.
_ARCH_BASE = "vit_small_patch14_dinov2"
_ARCH_BASE_REGISTERS = "vit_small_patch14_reg4_dinov2"


def resolve_dinov2_spec(
    spec: Mapping[str, Any], load_weights: bool = True
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Fill every default into a DINOv2 spec; also the timm name and kwargs that build it.

    A ``pretrained`` path is only checked when weights are to be loaded.
    """
    import timm

    where = f"dinov2 tower spec {dict(spec)}"
    check_keys(spec, DINOV2_SPEC_FIELDS, where)
    exactly_one_source(spec, where)
    out: dict[str, Any] = {"type": "dinov2"}
    pretrained = spec.get("pretrained")
    if isinstance(pretrained, Path):
        pretrained = str(pretrained)
    if pretrained is not None and not isinstance(pretrained, (bool, str)):
        raise TowerSpecError(f"{where}: pretrained must be True, False/None or a local path, got {pretrained!r}")
    if (
        load_weights
        and isinstance(pretrained, str)
        and local_checkpoint(pretrained, TIMM_CHECKPOINT_NAMES, where) is None
    ):
        raise TowerSpecError(
            f"{where}: pretrained {pretrained!r} is not a file or folder here; use True for timm's "
            "hub weights or a local checkpoint path"
        )
    if "model" in spec:
        model = spec["model"]
        if not isinstance(model, str) or not timm.is_model(model):
            close = difflib.get_close_matches(str(model), timm.list_models("*dinov2*", pretrained=True), n=3)
            raise TowerSpecError(
                f"{where}: {model!r} is not a timm model name"
                + (f"; did you mean {close}?" if close else "; see timm.list_models('*dinov2*')")
            )
        cfg = timm.models.get_pretrained_cfg(model)
        default_size = int(cfg.input_size[-1]) if cfg is not None else None
        default_mean = tuple(cfg.mean) if cfg is not None and cfg.mean else IMAGENET_MEAN
        default_std = tuple(cfg.std) if cfg is not None and cfg.std else IMAGENET_STD
        out["model"] = model
        timm_name, kwargs = model, {}
    else:
        arch = spec["arch"]
        if not isinstance(arch, Mapping):
            raise TowerSpecError(f"{where}: arch must be a dict with {list(DINOV2_ARCH_FIELDS)}, got {arch!r}")
        check_keys(arch, DINOV2_ARCH_FIELDS, f"{where}, arch")
        for required in ("embed_dim", "depth", "num_heads", "patch_size"):
            if required not in arch:
                raise TowerSpecError(f"{where}: arch needs {required!r}")
        if pretrained is True:
            raise TowerSpecError(
                f"{where}: an 'arch' tower has no hub weights; give a local checkpoint path or None"
            )
        arch = {"reg_tokens": 0, **arch}
        out["arch"] = dict(arch)
        timm_name = _ARCH_BASE_REGISTERS if arch["reg_tokens"] else _ARCH_BASE
        kwargs = dict(arch)
        default_size, default_mean, default_std = None, IMAGENET_MEAN, IMAGENET_STD
    if "image_size" not in spec and default_size is None:
        raise TowerSpecError(f"{where}: 'image_size' is needed (no default for this model)")
    out["image_size"] = image_size_of(spec.get("image_size", default_size), where)
    out["pretrained"] = pretrained
    out["layer"] = spec.get("layer", -1)
    out["mean"] = list(spec.get("mean", default_mean))
    out["std"] = list(spec.get("std", default_std))
    out["name"] = spec.get("name") or out.get("model") or "dinov2"
    out["pos_embed"] = spec.get("pos_embed", "learned")
    kwargs.update(img_size=out["image_size"], num_classes=0)
    return out, timm_name, kwargs


class DINOv2Tower(TowerBase):
    """timm DINOv2 ViT returning ``(B, grid*grid, embed_dim)`` normed patch tokens of block ``layer``."""

    def __init__(self, spec: Mapping[str, Any], load_weights: bool = True) -> None:
        import timm
        from timm.models.vision_transformer import VisionTransformer

        resolved, timm_name, kwargs = resolve_dinov2_spec(spec, load_weights)
        super().__init__(resolved["name"], resolved["mean"], resolved["std"])
        where = f"dinov2 tower {resolved['name']!r}"
        pretrained = resolved["pretrained"] if load_weights else None
        load_kwargs: dict[str, Any] = {}
        if isinstance(pretrained, str):
            path = local_checkpoint(pretrained, TIMM_CHECKPOINT_NAMES, where)
            load_kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        try:
            model = timm.create_model(timm_name, pretrained=bool(pretrained), **kwargs, **load_kwargs)
        except Exception as e:  # timm and the hub client raise many kinds; all mean the same here
            if not pretrained:
                raise TowerSpecError(f"{where}: timm cannot build {timm_name} with {kwargs}: {e}") from e
            source = load_kwargs.get("pretrained_cfg_overlay", {}).get("file", "timm's hub")
            raise WeightsError(
                f"{where}: could not load weights from {source} ({type(e).__name__}: {e}); without "
                "network access, pass a local checkpoint path as 'pretrained'"
            ) from e
        if not isinstance(model, VisionTransformer):
            raise TowerSpecError(f"{where}: timm built a {type(model).__name__}, not a ViT")
        depth = len(model.blocks)
        index = block_index(resolved["layer"], depth, where)
        model.prune_intermediate_layers(indices=[index], prune_norm=False, prune_head=True)
        if not pretrained:
            set_patch_positions(model.pos_embed, int(model.patch_embed.grid_size[0]), resolved["pos_embed"], where)
        self.model = model
        self.image_size = resolved["image_size"]
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.grid = int(model.patch_embed.grid_size[0])
        self.hidden_size = int(model.embed_dim)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.depth = depth
        self.layer_index = index
        self._spec = resolved

    def _input_dtype(self) -> torch.dtype:
        return self.model.patch_embed.proj.weight.dtype

    def spec(self) -> dict[str, Any]:
        return copy.deepcopy(self._spec)

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under timm's keys, the layout a ``pretrained`` path is read in."""
        return dict(self.model.state_dict())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalise_input(pixels)
        # The final norm is applied to the chosen block, as DINOv2 does for its patch tokens.
        return self.model.forward_intermediates(
            x, indices=1, norm=True, output_fmt="NLC", intermediates_only=True
        )[0]
