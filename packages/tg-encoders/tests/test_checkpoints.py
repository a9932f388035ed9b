"""Towers load checkpoints saved the way open_clip and timm save them, and match the libraries.

Each test makes a small model with the library itself, saves it in that library's format, loads
it into our tower from the path, and compares with the library's own forward (parity in the
litgpt sense): any difference in weights, normalisation, block choice or token dropping shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from open_clip.model import CLIP
from safetensors.torch import save_file

from tg_encoders import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TowerSpecError,
    WeightsError,
    build_tower,
    normalise,
    save_tower_weights,
    tiny_clip_spec,
    tiny_dinov2_spec,
)

VISION = {"width": 64, "layers": 3, "head_width": 32, "patch_size": 8}
TEXT = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}


def _open_clip_model(image_size: int = 64, seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(embed_dim=32, vision_cfg={**VISION, "image_size": image_size}, text_cfg=TEXT).eval()
    with torch.no_grad():  # open_clip starts some tensors at zero; make every weight matter
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _save_open_clip(model: CLIP, tmp_path: Path, layout: str) -> Path:
    state = model.state_dict()
    if layout == "safetensors":
        path = tmp_path / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "train-checkpoint":  # what open_clip's trainer writes, with DDP's "module." prefix
        path = tmp_path / "epoch_1.pt"
        torch.save({"epoch": 1, "name": "tiny", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif layout == "hub-folder":  # a downloaded hub folder: open_clip_pytorch_model.bin inside
        path = tmp_path / "hub"
        path.mkdir()
        torch.save(state, path / "open_clip_pytorch_model.bin")
    else:
        raise AssertionError(layout)
    return path


def _clip_reference(model: CLIP, pixels: torch.Tensor, block: int) -> torch.Tensor:
    x = normalise(pixels, CLIP_MEAN, CLIP_STD)
    out = model.visual.forward_intermediates(x, indices=[block], intermediates_only=True, output_fmt="NLC")
    return out["image_intermediates"][0]


@pytest.mark.parametrize("layout", ["safetensors", "train-checkpoint", "hub-folder"])
@pytest.mark.parametrize("layer", [-2, -1])
def test_clip_tower_loads_open_clip_checkpoints_with_identical_outputs(tmp_path, pixels, layout, layer):
    library = _open_clip_model()
    path = _save_open_clip(library, tmp_path, layout)
    spec = {"type": "clip", "arch": VISION, "image_size": 64, "pretrained": str(path), "layer": layer}
    torch.manual_seed(99)
    tower = build_tower(spec).eval()
    with torch.no_grad():
        ours = tower(pixels)
        reference = _clip_reference(library, pixels, block=VISION["layers"] + layer)
        unloaded = build_tower(spec, load_weights=False)(pixels)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    assert not torch.allclose(unloaded, reference, atol=1e-3)


@pytest.mark.parametrize("spec_fn", [tiny_clip_spec, tiny_dinov2_spec], ids=["clip", "dinov2"])
def test_saved_tower_weights_load_back_identically_through_pretrained(tmp_path, pixels, spec_fn):
    """A tower trained here, written in its library's layout, is a ``pretrained`` path like a download."""
    spec = spec_fn(image_size=64, pos_embed="sincos")
    torch.manual_seed(5)
    tower = build_tower(spec).eval()
    with torch.no_grad():  # as after training: nothing left at its initial value
        for p in tower.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_tower_weights(tower, tmp_path / "towers" / "tower.safetensors")
    assert path.is_file() and not list(path.parent.glob("*.partial"))
    torch.manual_seed(6)
    loaded = build_tower({**spec, "pretrained": str(path)}).eval()
    fresh = build_tower(spec).eval()
    with torch.no_grad():
        assert torch.equal(loaded(pixels), tower(pixels))
        assert not torch.allclose(fresh(pixels), tower(pixels), atol=1e-3)


def test_clip_checkpoint_at_other_resolution_gets_resampled_position_embeddings(tmp_path):
    library = _open_clip_model(image_size=48)  # a 6x6 grid
    with torch.no_grad():
        library.visual.positional_embedding[1:] = torch.linspace(-1, 1, 64)  # the same vector at every patch
    path = _save_open_clip(library, tmp_path, "safetensors")
    tower = build_tower({"type": "clip", "arch": VISION, "image_size": 64, "pretrained": str(path)})
    pos = tower.visual.positional_embedding.detach()
    assert pos.shape == (1 + 8 * 8, 64)
    torch.testing.assert_close(pos[0], library.visual.positional_embedding[0].detach())
    torch.testing.assert_close(pos[1:], torch.linspace(-1, 1, 64).expand(64, 64), rtol=1e-5, atol=1e-5)


def _timm_dinov2(reg_tokens: int, image_size: int = 64, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    name = "vit_small_patch14_reg4_dinov2" if reg_tokens else "vit_small_patch14_dinov2"
    model = timm.create_model(
        name, pretrained=False, embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=image_size,
        num_classes=0, reg_tokens=reg_tokens,
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _dinov2_arch(reg_tokens: int) -> dict:
    return {"embed_dim": 64, "depth": 2, "num_heads": 2, "patch_size": 8, "reg_tokens": reg_tokens}


def _save_timm(model: torch.nn.Module, tmp_path: Path, layout: str) -> Path:
    state = model.state_dict()
    if layout == "safetensors":
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "pth":
        path = tmp_path / "dinov2.pth"
        torch.save(state, path)
    elif layout == "hub-folder":
        path = tmp_path / "hub"
        path.mkdir()
        save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    elif layout == "dinov2-release":  # the original release carries a mask token timm drops
        path = tmp_path / "dinov2_pretrain.pth"
        torch.save({**state, "mask_token": torch.zeros(1, state["cls_token"].shape[-1])}, path)
    else:
        raise AssertionError(layout)
    return path


@pytest.mark.parametrize("layout", ["safetensors", "pth", "hub-folder", "dinov2-release"])
@pytest.mark.parametrize("reg_tokens", [0, 4])
def test_dinov2_tower_loads_timm_checkpoints_with_identical_outputs(tmp_path, pixels, layout, reg_tokens):
    library = _timm_dinov2(reg_tokens)
    path = _save_timm(library, tmp_path, layout)
    spec = {"type": "dinov2", "arch": _dinov2_arch(reg_tokens), "image_size": 64, "pretrained": str(path)}
    torch.manual_seed(99)
    tower = build_tower(spec).eval()
    assert tower.num_prefix_tokens == 1 + reg_tokens
    with torch.no_grad():
        ours = tower(pixels)
        tokens = library.forward_features(normalise(pixels, IMAGENET_MEAN, IMAGENET_STD))
        unloaded = build_tower(spec, load_weights=False)(pixels)
    assert tokens.shape[1] == 64 + 1 + reg_tokens
    torch.testing.assert_close(ours, tokens[:, 1 + reg_tokens :], rtol=0, atol=0)
    assert not torch.allclose(unloaded, ours, atol=1e-3)


def test_dinov2_checkpoint_at_other_resolution_gets_resampled_position_embeddings(tmp_path):
    library = _timm_dinov2(reg_tokens=0, image_size=48)  # made at a 6x6 grid, as DINOv2 ships at 518
    with torch.no_grad():
        library.pos_embed[:, 1:] = torch.linspace(-1, 1, 64)
    path = _save_timm(library, tmp_path, "safetensors")
    tower = build_tower({"type": "dinov2", "arch": _dinov2_arch(0), "image_size": 64, "pretrained": str(path)})
    pos = tower.model.pos_embed.detach()
    assert pos.shape == (1, 1 + 8 * 8, 64)
    torch.testing.assert_close(pos[0, 0], library.pos_embed[0, 0].detach())
    torch.testing.assert_close(pos[0, 1:], torch.linspace(-1, 1, 64).expand(64, 64), rtol=1e-5, atol=1e-5)


def test_named_models_load_local_checkpoints(tmp_path):
    """The named-model path (the one the real towers take) with weights from a local file."""
    torch.manual_seed(0)
    clip_spec = {"type": "clip", "model": "ViT-S-32", "image_size": 64, "layer": -2}
    source = build_tower({**clip_spec, "layer": -1}, load_weights=False)
    clip_file = tmp_path / "vit-s-32.safetensors"
    save_file({f"visual.{k}": v.contiguous() for k, v in source.visual.state_dict().items()}, str(clip_file))
    clip = build_tower({**clip_spec, "pretrained": str(clip_file)})
    assert (clip.grid, clip.hidden_size) == (2, 384)
    loaded_block = clip.visual.transformer.resblocks[-1].attn.in_proj_weight
    assert torch.equal(loaded_block, source.visual.transformer.resblocks[-2].attn.in_proj_weight)

    # DINOv2-S/14 saved at its native 518 and run at 56, as the real tower runs the 518 weights at 336.
    native = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    dino_file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in native.state_dict().items()}, str(dino_file))
    dino = build_tower(
        {"type": "dinov2", "model": "vit_small_patch14_dinov2.lvd142m", "image_size": 56, "pretrained": str(tmp_path)}
    )
    assert (dino.grid, dino.hidden_size) == (4, 384)
    assert dino.model.pos_embed.shape == (1, 1 + 16, 384)
    assert torch.equal(dino.model.blocks[0].attn.qkv.weight, native.blocks[0].attn.qkv.weight)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    library = _open_clip_model()
    path = _save_open_clip(library, tmp_path, "safetensors")
    wider = {"type": "clip", "arch": {**VISION, "width": 96}, "image_size": 64, "pretrained": str(path)}
    with pytest.raises(WeightsError, match="does not fit"):
        build_tower(wider)
    dino_path = _save_timm(_timm_dinov2(0), tmp_path, "pth")
    deeper = {"type": "dinov2", "arch": {**_dinov2_arch(0), "depth": 3}, "image_size": 64, "pretrained": str(dino_path)}
    with pytest.raises(WeightsError, match="could not load weights"):
        build_tower(deeper)


def test_file_without_clip_weights_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(WeightsError, match="no open_clip image tower"):
        build_tower({"type": "clip", "arch": VISION, "image_size": 64, "pretrained": str(path)})
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        build_tower({"type": "clip", "arch": VISION, "image_size": 64, "pretrained": str(garbage)})


def test_load_weights_false_never_reads_the_checkpoint(tmp_path):
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    tower = build_tower({"type": "clip", "arch": VISION, "image_size": 64, "pretrained": str(garbage)}, load_weights=False)
    assert tower.spec()["pretrained"] == str(garbage)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "clip", "arch": VISION, "image_size": 64},
        {"type": "clip", "model": "ViT-S-32", "image_size": 64},
        {"type": "dinov2", "arch": _dinov2_arch(0), "image_size": 64},
    ],
    ids=["clip-arch", "clip-model", "dinov2-arch"],
)
def test_specs_naming_paths_of_another_machine_rebuild_without_weights(spec):
    """A stored spec may name a checkpoint that is not here; rebuilding the architecture still works."""
    elsewhere = {**spec, "pretrained": "/elsewhere/weights.safetensors"}
    tower = build_tower(elsewhere, load_weights=False)
    assert tower.spec()["pretrained"] == "/elsewhere/weights.safetensors"
    with pytest.raises(TowerSpecError, match=r"not a file or folder here|neither a local checkpoint"):
        build_tower(elsewhere)
