"""The spatial patch merge: 2x2 blocks of tower patches become one image token, no patch lost."""

from __future__ import annotations

import pytest
import torch

from tg_model.modeling import TinyGroundingGPTForCausalLM, merge_patches
from tg_model.presets import build_model


def _reference_merge(features: torch.Tensor, grid: int, merge: int) -> torch.Tensor:
    """Token (R, C) of the merged grid holds patches (R*m + i, C*m + j), i and j row-major."""
    n, _, c = features.shape
    side = grid // merge
    out = torch.empty(n, side * side, merge * merge * c)
    for r in range(side):
        for col in range(side):
            parts = [features[:, (r * merge + i) * grid + col * merge + j] for i in range(merge) for j in range(merge)]
            out[:, r * side + col] = torch.cat(parts, dim=-1)
    return out


@pytest.mark.parametrize(("grid", "merge"), [(8, 2), (6, 3), (4, 4), (8, 1)])
def test_merge_matches_the_block_by_block_reference(grid, merge):
    features = torch.randn(2, grid * grid, 5)
    torch.testing.assert_close(merge_patches(features, grid, merge), _reference_merge(features, grid, merge))


@pytest.fixture(scope="module")
def merged() -> TinyGroundingGPTForCausalLM:
    model, _ = build_model("tiny", seed=0, spatial_merge_size=2)
    return model.eval()


def test_a_merged_model_reads_a_quarter_of_the_tokens_with_every_patch(merged):
    grid = merged.encoder.grid
    assert merged.token_grid == grid // 2
    assert merged.image_tokens == (grid // 2) ** 2
    assert merged.projector.linear_1.in_features == 4 * merged.encoder.hidden_size
    pixels = torch.rand(3, 3, merged.encoder.image_size, merged.encoder.image_size)
    with torch.no_grad():
        feats = merged.image_features(pixels)
        expected = merged.projector(_reference_merge(merged.encoder(pixels), grid, 2))
    assert feats.shape == (3, merged.image_tokens, merged.config.hidden_size)
    torch.testing.assert_close(feats, expected)


def test_object_images_pool_the_merged_grid(merged):
    crops = torch.rand(2, 3, merged.encoder.image_size, merged.encoder.image_size)
    with torch.no_grad():
        feats = merged.object_features(crops)
    assert feats.shape == (2, merged.object_tokens, merged.config.hidden_size)
    with torch.no_grad():  # object_grid 2 on a 4 x 4 merged grid: each row the mean of a 2 x 2 block
        tokens = merged.image_features(crops)
    side = merged.token_grid
    block = tokens.reshape(2, side, side, -1)[:, :2, :2].mean(dim=(1, 2))
    torch.testing.assert_close(feats[:, 0], block)


def test_a_merge_that_does_not_divide_the_grid_is_refused():
    with pytest.raises(ValueError, match="spatial_merge_size 3 does not divide the towers' 8x8 patch grid"):
        build_model("tiny", spatial_merge_size=3)
    with pytest.raises(ValueError, match="spatial_merge_size must be >= 1"):
        build_model("tiny", spatial_merge_size=0)


def test_the_merge_survives_save_and_load(merged, tmp_path):
    merged.save_pretrained(tmp_path)
    again = TinyGroundingGPTForCausalLM.from_pretrained(tmp_path).eval()
    assert again.config.spatial_merge_size == 2 and again.image_tokens == merged.image_tokens
    pixels = torch.rand(1, 3, merged.encoder.image_size, merged.encoder.image_size)
    with torch.no_grad():
        torch.testing.assert_close(again.image_features(pixels), merged.image_features(pixels))
