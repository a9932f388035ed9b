"""The CLIP image tower on open_clip: patch features of one transformer block, CLS dropped.

Only the image tower is built (never the text tower), weights come from an open_clip checkpoint
(a pretrained tag, or a local file or folder in open_clip's format), and the blocks after the
chosen one, the final norm and the projection are pruned: they never reach the features, so they
need not be stored or run.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tg_encoders.errors import TowerSpecError, WeightsError
from tg_encoders.processing import CLIP_MEAN, CLIP_STD
from tg_encoders.tower_base import (
    TowerBase,
    block_index,
    check_keys,
    exactly_one_source,
    image_size_of,
    local_checkpoint,
    set_patch_positions,
)

CLIP_SPEC_FIELDS = (
    "type", "name", "model", "arch", "image_size", "pretrained", "layer", "quick_gelu", "mean", "std", "pos_embed",
)
# open_clip's own file names, in the order its loader prefers them.
OPEN_CLIP_CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "model.pth",
)
_ARCH_EXCLUDED = {"image_size", "output_tokens"}


def _arch_fields() -> set[str]:
    from open_clip.model import CLIPVisionCfg

    return {f.name for f in dataclasses.fields(CLIPVisionCfg) if not f.name.startswith("timm_")} - _ARCH_EXCLUDED


def resolve_clip_spec(
    spec: Mapping[str, Any], load_weights: bool = True
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Fill every default into a CLIP spec, so that rebuilding it gives the same architecture.

    Returns the complete spec, open_clip's ``vision_cfg`` for it, and the embedding width. A
    ``pretrained`` path is only checked when weights are to be loaded (a stored spec may name a
    path on another machine).
    """
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    where = f"clip tower spec {dict(spec)}"
    check_keys(spec, CLIP_SPEC_FIELDS, where)
    exactly_one_source(spec, where)
    out: dict[str, Any] = {"type": "clip"}
    pretrained = spec.get("pretrained")
    if isinstance(pretrained, Path):
        pretrained = str(pretrained)
    if pretrained is not None and not isinstance(pretrained, str):
        raise TowerSpecError(f"{where}: pretrained must be an open_clip tag, a local path or None, got {pretrained!r}")
    tag_cfg: dict[str, Any] = {}
    if "model" in spec:
        model = spec["model"]
        config = open_clip.get_model_config(model) if isinstance(model, str) else None
        if config is None:
            close = difflib.get_close_matches(str(model), open_clip.list_models(), n=3)
            raise TowerSpecError(
                f"{where}: {model!r} is not an open_clip model name"
                + (f"; did you mean {close}?" if close else "; see open_clip.list_models()")
            )
        vision = dict(config["vision_cfg"])
        if vision.get("timm_model_name") or not isinstance(vision.get("layers"), int):
            raise TowerSpecError(
                f"{where}: {model!r} has a {'timm' if vision.get('timm_model_name') else 'ResNet'} image "
                "tower; CLIPTower supports open_clip's own ViT towers (e.g. ViT-L-14-336)"
            )
        tag_cfg = get_pretrained_cfg(model, pretrained) if pretrained else {}
        is_path = bool(pretrained) and not tag_cfg
        if is_path and load_weights and local_checkpoint(pretrained, OPEN_CLIP_CHECKPOINT_NAMES, where) is None:
            raise TowerSpecError(
                f"{where}: pretrained {pretrained!r} is neither a local checkpoint path nor an open_clip "
                f"tag of {model!r} (tags: {list_pretrained_tags_by_model(model)})"
            )
        out["model"] = model
        default_size = vision.get("image_size")
        default_quick_gelu = bool(tag_cfg.get("quick_gelu", config.get("quick_gelu", False)))
        embed_dim = int(config["embed_dim"])
        arch = {k: v for k, v in vision.items() if k not in _ARCH_EXCLUDED}
    else:
        arch = spec["arch"]
        if not isinstance(arch, Mapping):
            raise TowerSpecError(f"{where}: arch must be a dict of open_clip vision_cfg fields, got {arch!r}")
        check_keys(arch, _arch_fields(), f"{where}, arch")
        for required in ("width", "layers", "patch_size"):
            if required not in arch:
                raise TowerSpecError(f"{where}: arch needs {required!r} (open_clip vision_cfg field)")
        if pretrained and load_weights and local_checkpoint(pretrained, OPEN_CLIP_CHECKPOINT_NAMES, where) is None:
            raise TowerSpecError(
                f"{where}: pretrained {pretrained!r} is not a file or folder here; an 'arch' tower loads "
                "weights only from a local open_clip checkpoint"
            )
        arch = dict(arch)
        out["arch"] = arch
        embed_dim = int(arch["width"])  # the projection is pruned: any width will do
        default_size = None
        default_quick_gelu = False
    if "image_size" not in spec and default_size is None:
        raise TowerSpecError(f"{where}: an 'arch' tower needs 'image_size'")
    out["image_size"] = image_size_of(spec.get("image_size", default_size), where)
    out["pretrained"] = pretrained
    out["layer"] = spec.get("layer", -2)
    block_index(out["layer"], int(arch["layers"]), where)
    out["quick_gelu"] = bool(spec.get("quick_gelu", default_quick_gelu))
    out["mean"] = list(spec.get("mean", tag_cfg.get("mean", CLIP_MEAN)))
    out["std"] = list(spec.get("std", tag_cfg.get("std", CLIP_STD)))
    out["name"] = spec.get("name") or out.get("model") or "clip"
    out["pos_embed"] = spec.get("pos_embed", "learned")
    return out, {**arch, "image_size": out["image_size"]}, embed_dim


def _is_pruned_key(key: str, kept_blocks: int) -> bool:
    """Keys of the parts pruned from the tower (later blocks, final norm, projection, pooler)."""
    if key == "proj" or key.startswith(("ln_post.", "attn_pool.", "attn_pool_contrastive.")):
        return True
    prefix = "transformer.resblocks."
    if key.startswith(prefix):
        return int(key[len(prefix) :].split(".", 1)[0]) >= kept_blocks
    return False


def _load_open_clip_weights(visual: torch.nn.Module, path: Path, where: str) -> None:
    """Load the ``visual.*`` part of an open_clip checkpoint (full CLIP or image tower only)."""
    from open_clip.factory import load_state_dict
    from open_clip.model import resize_pos_embed

    try:
        state = load_state_dict(str(path))
    except Exception as e:
        raise WeightsError(f"{where}: cannot read checkpoint {path}: {e}") from e
    if any(k.startswith("visual.") for k in state):
        state = {k: v for k, v in state.items() if k.startswith("visual.")}
    elif "conv1.weight" in state:
        state = {f"visual.{k}": v for k, v in state.items()}
    else:
        raise WeightsError(
            f"{where}: {path} holds no open_clip image tower (no 'visual.*' keys); "
            f"first keys: {list(state)[:5]}"
        )

    class _Holder:
        pass

    holder = _Holder()
    holder.visual = visual  # type: ignore[attr-defined]
    resize_pos_embed(state, holder)  # checkpoints made at another resolution
    state = {k[len("visual.") :]: v for k, v in state.items()}
    expected = set(visual.state_dict())
    kept_blocks = len(visual.transformer.resblocks)
    unexpected = sorted(k for k in state if k not in expected and not _is_pruned_key(k, kept_blocks))
    try:
        if unexpected:
            raise RuntimeError(f"unexpected keys {unexpected[:8]}")
        visual.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{where}: checkpoint {path} does not fit this architecture:\n{e}") from e


def _download(resolved: Mapping[str, Any], where: str) -> Path:
    """Fetch the weights of an open_clip pretrained tag (or find them in open_clip's cache)."""
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    cfg = get_pretrained_cfg(resolved["model"], resolved["pretrained"])
    try:
        target = download_pretrained(cfg)
    except Exception as e:
        raise WeightsError(
            f"{where}: could not fetch open_clip weights {resolved['model']}/{resolved['pretrained']} "
            f"({type(e).__name__}: {e}); without network access, pass a local checkpoint path as "
            "'pretrained'"
        ) from e
    return Path(target)


class CLIPTower(TowerBase):
    """open_clip ViT image tower returning ``(B, grid*grid, width)`` features of block ``layer``."""

    def __init__(self, spec: Mapping[str, Any], load_weights: bool = True) -> None:
        from open_clip.model import CLIPVisionCfg, _build_vision_tower
        from open_clip.pretrained import get_pretrained_cfg
        from open_clip.transformer import VisionTransformer

        resolved, vision_cfg, embed_dim = resolve_clip_spec(spec, load_weights)
        super().__init__(resolved["name"], resolved["mean"], resolved["std"])
        where = f"clip tower {resolved['name']!r}"
        # open_clip's own builder for a CLIP image tower (the text tower is never made).
        visual = _build_vision_tower(embed_dim, CLIPVisionCfg(**vision_cfg), quick_gelu=resolved["quick_gelu"])
        if not isinstance(visual, VisionTransformer):
            raise TowerSpecError(f"{where}: open_clip built a {type(visual).__name__}, not a ViT")
        depth = len(visual.transformer.resblocks)
        index = block_index(resolved["layer"], depth, where)
        visual.prune_intermediate_layers(indices=[index], prune_norm=True, prune_head=True)
        visual.attn_pool = None
        visual.attn_pool_contrastive = None
        set_patch_positions(visual.positional_embedding, int(visual.grid_size[0]), resolved["pos_embed"], where)
        if load_weights and resolved["pretrained"]:
            path = None
            if resolved.get("model") is None or not get_pretrained_cfg(resolved["model"], resolved["pretrained"]):
                path = local_checkpoint(resolved["pretrained"], OPEN_CLIP_CHECKPOINT_NAMES, where)
            if path is None:
                path = _download(resolved, where)
            _load_open_clip_weights(visual, path, where)
        self.visual = visual
        self.image_size = resolved["image_size"]
        self.patch_size = int(visual.patch_size[0])
        self.grid = int(visual.grid_size[0])
        self.hidden_size = int(visual.transformer.width)
        self.depth = depth
        self.layer_index = index
        self._spec = resolved

    def _input_dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def spec(self) -> dict[str, Any]:
        return copy.deepcopy(self._spec)

    def native_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under open_clip's keys (``visual.*``), the layout a ``pretrained`` path is read in."""
        return {f"visual.{k}": v for k, v in self.visual.state_dict().items()}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalise_input(pixels)
        out = self.visual.forward_intermediates(x, indices=1, intermediates_only=True, output_fmt="NLC")
        return out["image_intermediates"][0]
