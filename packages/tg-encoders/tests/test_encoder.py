"""The multi-scale encoder: per-patch concatenation, frozen towers, resampling, mixed precision."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tg_encoders import (
    GridMismatchError,
    MultiScaleEncoder,
    TowerSpecError,
    build_encoder,
    build_tower,
    tiny_clip_spec,
    tiny_dinov2_spec,
    tiny_encoder_specs,
)


def _encoder(seed: int = 0, **kwargs) -> MultiScaleEncoder:
    torch.manual_seed(seed)
    return build_encoder(tiny_encoder_specs(**kwargs))


def test_concatenates_tower_features_per_patch_in_order(pixels):
    encoder = _encoder()
    clip, dino = encoder.towers
    assert (encoder.grid, encoder.image_size, encoder.num_patches) == (8, 64, 64)
    assert encoder.hidden_size == clip.hidden_size + dino.hidden_size == 128
    assert encoder.widths == [64, 64]
    with torch.no_grad():
        fused = encoder(pixels)
        assert fused.shape == (3, 64, 128)
        assert torch.equal(fused[..., :64], clip(pixels))
        assert torch.equal(fused[..., 64:], dino(pixels))


def test_tiny_specs_keep_their_parameters():
    specs = tiny_encoder_specs(image_size=96, patch_size=16, width=48, depth=3, heads=3)
    encoder = build_encoder(specs)
    assert (encoder.image_size, encoder.grid, encoder.hidden_size) == (96, 6, 96)
    assert [t.spec()["type"] for t in encoder.towers] == ["clip", "dinov2"]
    with pytest.raises(TowerSpecError, match="multiple of patch_size"):
        tiny_encoder_specs(image_size=100, patch_size=16)


def test_frozen_towers_get_no_gradient_but_downstream_layers_and_input_do(pixels):
    encoder = _encoder()
    assert encoder.frozen and not any(p.requires_grad for p in encoder.parameters())
    head = nn.Linear(encoder.hidden_size, 4)
    x = pixels.clone().requires_grad_(True)
    head(encoder(x)).square().mean().backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_inference_first_then_gradients_to_the_input(pixels):
    """Evaluation under inference_mode, then a forward that needs autograd (e.g. saliency)."""
    encoder = _encoder()
    with torch.inference_mode():
        encoder(pixels)
    x = pixels.clone().requires_grad_(True)
    encoder(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_frozen_towers_build_no_graph_when_nothing_needs_it(pixels):
    encoder = _encoder()
    assert encoder(pixels).grad_fn is None


def test_train_mode_keeps_frozen_towers_in_eval_until_unfrozen(pixels):
    encoder = _encoder()
    parent = nn.Sequential(encoder, nn.Linear(encoder.hidden_size, 2))
    parent.train()
    assert encoder.training and parent[1].training
    assert not any(m.training for m in encoder.towers.modules())
    encoder.unfreeze()
    assert all(p.requires_grad for p in encoder.parameters())
    parent.train()
    assert all(m.training for m in encoder.towers.modules())
    encoder(pixels).sum().backward()
    assert all(p.grad is not None for p in encoder.towers.parameters())
    encoder.freeze()
    assert not any(m.training for m in encoder.towers.modules())
    assert not any(p.requires_grad for p in encoder.parameters())


def test_one_batched_forward_equals_per_image_forwards(pixels):
    encoder = _encoder()
    with torch.no_grad():
        batched = encoder(pixels)
        single = torch.cat([encoder(pixels[i : i + 1]) for i in range(len(pixels))])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_mismatched_grids_are_refused_unless_resampling(pixels):
    clip = build_tower(tiny_clip_spec(patch_size=8))  # 8x8 grid
    dino = build_tower(tiny_dinov2_spec(patch_size=16))  # 4x4 grid
    with pytest.raises(GridMismatchError, match=r"different patch grids .*resample=True"):
        MultiScaleEncoder([clip, dino])
    encoder = MultiScaleEncoder([clip, dino], resample=True)
    assert (encoder.grid, encoder.hidden_size) == (8, 128)
    with torch.no_grad():
        fused = encoder(pixels)
        coarse = dino(pixels)  # (B, 16, D)
    assert fused.shape == (3, 64, 128)
    fmap = coarse.transpose(1, 2).reshape(3, 64, 4, 4)
    expected = nn.functional.interpolate(fmap, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(fused[..., 64:], expected.reshape(3, 64, 64).transpose(1, 2))
    # A constant feature map stays constant under bilinear resampling.
    flat = torch.ones(1, 16, 5)
    assert torch.allclose(encoder._to_grid(flat, 8), torch.ones(1, 64, 5))


def test_towers_reading_different_image_sizes_are_refused():
    with pytest.raises(GridMismatchError, match="same 'image_size'"):
        MultiScaleEncoder(
            [build_tower(tiny_clip_spec(image_size=64)), build_tower(tiny_dinov2_spec(image_size=32, patch_size=4))],
            resample=True,
        )


def test_bad_tower_lists_are_refused():
    with pytest.raises(TowerSpecError, match="at least one tower"):
        MultiScaleEncoder([])
    with pytest.raises(TowerSpecError, match="not a VisionTower"):
        MultiScaleEncoder([nn.Linear(2, 2)])  # type: ignore[list-item]
    with pytest.raises(TowerSpecError, match="list of tower specs"):
        build_encoder(tiny_clip_spec())  # type: ignore[arg-type]


def test_specs_rebuild_an_identical_encoder_from_its_state_dict(pixels):
    encoder = _encoder(seed=7)
    specs = json.loads(json.dumps(encoder.specs()))
    rebuilt = build_encoder(specs, load_weights=False)
    rebuilt.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(pixels), encoder(pixels))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_gives_the_autocast_dtype_close_to_float32(pixels, dtype):
    encoder = _encoder()
    with torch.no_grad():
        reference = encoder(pixels)
        with torch.autocast("cpu", dtype=dtype):
            mixed = encoder(pixels)
    assert mixed.dtype == dtype
    assert mixed.shape == reference.shape
    error = (mixed.float() - reference).norm() / reference.norm()
    assert error < 0.05
