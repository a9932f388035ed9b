"""Every tower kind held to the same contract (timm style: one parameterised suite for all)."""

from __future__ import annotations

import json

import pytest
import torch

from tg_encoders import (
    ImageInputError,
    TowerSpecError,
    VisionTower,
    build_tower,
    count_parameters,
    normalise,
)


def _build(spec: dict, seed: int = 0) -> VisionTower:
    torch.manual_seed(seed)
    return build_tower(spec).eval()


def test_output_shape_matches_declared_grid_and_width(tiny_spec, pixels):
    tower = _build(tiny_spec)
    assert isinstance(tower, VisionTower)
    assert tower.grid == tower.image_size // tower.patch_size == 8
    out = tower(pixels)
    assert out.shape == (3, tower.grid * tower.grid, tower.hidden_size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_forward_is_deterministic_and_independent_of_batch(tiny_spec, pixels):
    tower = _build(tiny_spec)
    with torch.no_grad():
        first, second = tower(pixels), tower(pixels)
        alone = tower(pixels[1:2])
    assert torch.equal(first, second)
    torch.testing.assert_close(alone[0], first[1], rtol=1e-5, atol=1e-5)


def test_each_patch_feature_depends_on_the_image(tiny_spec, pixels):
    tower = _build(tiny_spec)
    with torch.no_grad():
        a, b = tower(pixels[:1]), tower(pixels[1:2])
    assert not torch.allclose(a, b, atol=1e-3)


def test_seed_fixes_random_weights_and_different_seeds_differ(tiny_spec, pixels):
    with torch.no_grad():
        a = _build(tiny_spec, seed=3)(pixels)
        b = _build(tiny_spec, seed=3)(pixels)
        c = _build(tiny_spec, seed=4)(pixels)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)


def test_spec_is_json_and_rebuilds_the_same_architecture(tiny_spec, pixels):
    tower = _build(tiny_spec, seed=1)
    spec = tower.spec()
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = build_tower(spec, load_weights=False).eval()
    own, other = tower.state_dict(), rebuilt.state_dict()
    assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in other.items()}
    rebuilt.load_state_dict(own)
    with torch.no_grad():
        assert torch.equal(rebuilt(pixels), tower(pixels))
    assert rebuilt.spec() == spec


def test_tower_normalises_with_its_own_statistics(tiny_spec, pixels):
    tower = _build(tiny_spec)
    expected = normalise(pixels, tower.mean, tower.std)
    torch.testing.assert_close(tower.normalise_input(pixels), expected)
    assert (list(tower.mean), list(tower.std)) == (tower.spec()["mean"], tower.spec()["std"])
    # Casting the weights to bf16 leaves the statistics exact: normalised in float32, then cast once.
    tower.to(torch.bfloat16)
    assert torch.equal(tower.normalise_input(pixels), expected.to(torch.bfloat16))


def test_wrong_input_size_is_refused_with_the_expected_shape(tiny_spec):
    tower = _build(tiny_spec)
    with pytest.raises(ImageInputError, match=r"\(B, 3, 64, 64\)"):
        tower(torch.rand(1, 3, 48, 48))
    with pytest.raises(ImageInputError, match="float"):
        tower(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_builds_on_meta_device_without_allocating(tiny_spec):
    with torch.device("meta"):
        tower = build_tower(tiny_spec, load_weights=False)
    assert all(p.is_meta for p in tower.parameters())
    real = _build(tiny_spec)
    assert count_parameters(tower) == count_parameters(real)
    with torch.device("meta"):
        out = tower(torch.empty(2, 3, 64, 64))
    assert out.shape == (2, 64, tower.hidden_size)


def test_bf16_weights_run_without_autocast(tiny_spec, pixels):
    tower = _build(tiny_spec)
    with torch.no_grad():
        reference = tower(pixels)
        out = tower.to(torch.bfloat16)(pixels)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.15)


def test_layer_selects_the_block_and_prunes_later_ones():
    spec = {"type": "clip", "arch": {"width": 32, "layers": 4, "head_width": 16, "patch_size": 8}, "image_size": 32}
    penultimate = build_tower({**spec, "layer": -2})
    first = build_tower({**spec, "layer": 0})
    assert len(penultimate.visual.transformer.resblocks) == 3
    assert len(first.visual.transformer.resblocks) == 1
    assert penultimate.visual.proj is None  # the projection never reaches patch features
    dino = build_tower(
        {"type": "dinov2", "arch": {"embed_dim": 32, "depth": 4, "num_heads": 2, "patch_size": 8}, "image_size": 32,
         "layer": 1}
    )
    assert len(dino.model.blocks) == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "vit"}, "'type' must be one of"),
        ({"type": "clip", "image_size": 64}, "exactly one of 'model'"),
        ({"type": "clip", "model": "ViT-L-14-33", "pretrained": None}, "did you mean"),
        ({"type": "clip", "model": "RN50"}, "ResNet"),
        ({"type": "clip", "model": "ViT-L-14-336", "pretrained": "laion9000"}, "tags"),
        ({"type": "clip", "arch": {"width": 32, "layers": 2, "patch_size": 8}}, "image_size"),
        ({"type": "clip", "arch": {"width": 32, "layers": 2, "patch": 8}, "image_size": 32}, "did you mean 'patch_size'"),
        ({"type": "clip", "arch": {"width": 32, "layers": 2, "patch_size": 8}, "image_size": 32, "layer": 2}, r"\[-2, 1\]"),
        ({"type": "dinov2", "model": "vit_large_patch14_dino", "image_size": 336}, "not a timm model"),
        ({"type": "dinov2", "arch": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8},
          "image_size": 32, "pretrained": True}, "no hub weights"),
        ({"type": "dinov2", "arch": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8},
          "image_size": 32, "pretrained": "/nonexistent/weights.safetensors"}, "not a file or folder"),
        ({"type": "dinov2", "arch": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "image_size": 32}, "patch_size"),
        ({"type": "dinov2", "arch": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}, "image_size": 0},
         "positive int"),
    ],
)
def test_bad_specs_get_clear_errors(spec, message):
    # Refused while reading the spec, before anything is built or fetched.
    with pytest.raises(TowerSpecError, match=message):
        build_tower(spec)
