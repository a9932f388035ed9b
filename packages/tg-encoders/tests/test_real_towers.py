"""The real towers, checked without weights: built on the meta device, nothing allocated or fetched.

Parameter counts are derived here from the ViT layout itself (patch embedding, tokens, position
embeddings, blocks), independently of how the libraries count.
"""

from __future__ import annotations

import pytest
import torch

from tg_encoders import (
    TOWERS,
    TowerSpecError,
    WeightsError,
    build_encoder,
    build_tower,
    count_parameters,
    real_encoder_specs,
)


def _vit_parameters(
    width: int, blocks: int, patch: int, grid: int, *, patch_bias: bool, layer_scale: bool, pos_tokens: int,
    extra_tokens: int, final_norm: bool,
) -> int:
    """Parameters of a pre-norm ViT with an MLP ratio of 4."""
    patch_embed = 3 * patch * patch * width + (width if patch_bias else 0)
    tokens = extra_tokens * width
    pos = (grid * grid + pos_tokens) * width
    block = (3 * width * width + 3 * width) + (width * width + width)  # qkv, attention output
    block += (4 * width * width + 4 * width) + (4 * width * width + width)  # MLP
    block += 2 * 2 * width + (2 * width if layer_scale else 0)  # two norms, two layer scales
    return patch_embed + tokens + pos + blocks * block + (2 * width if final_norm else 0)


def test_clip_vit_l_14_336_dims_and_parameters_on_meta():
    with torch.device("meta"):
        tower = build_tower(TOWERS["clip-vit-l-14-336"], load_weights=False)
    assert all(p.is_meta for p in tower.parameters())
    assert (tower.image_size, tower.patch_size, tower.grid, tower.hidden_size) == (336, 14, 24, 1024)
    assert tower.depth == 24 and tower.layer_index == 22  # the penultimate block's output
    # CLS + positions, ln_pre, 23 kept blocks; the last block, ln_post and projection are pruned.
    expected = _vit_parameters(
        1024, 23, 14, 24, patch_bias=False, layer_scale=False, pos_tokens=1, extra_tokens=1, final_norm=True
    )
    assert count_parameters(tower) == expected
    assert 285e6 < expected < 295e6
    assert tower.spec()["quick_gelu"] is True  # OpenAI weights were trained with QuickGELU
    with torch.device("meta"):
        assert tower(torch.empty(2, 3, 336, 336)).shape == (2, 576, 1024)


@pytest.mark.parametrize(("name", "registers"), [("dinov2-vit-l-14-336", 0), ("dinov2-reg4-vit-l-14-336", 4)])
def test_dinov2_l_14_at_336_dims_and_parameters_on_meta(name, registers):
    with torch.device("meta"):
        tower = build_tower(TOWERS[name], load_weights=False)
    assert all(p.is_meta for p in tower.parameters())
    assert (tower.image_size, tower.patch_size, tower.grid, tower.hidden_size) == (336, 14, 24, 1024)
    assert tower.num_prefix_tokens == 1 + registers
    # timm's register variants keep the class token out of the position embeddings.
    expected = _vit_parameters(
        1024, 24, 14, 24, patch_bias=True, layer_scale=True, pos_tokens=0 if registers else 1,
        extra_tokens=1 + registers, final_norm=True,
    )
    assert count_parameters(tower) == expected
    assert 300e6 < expected < 306e6
    with torch.device("meta"):
        assert tower(torch.empty(2, 3, 336, 336)).shape == (2, 576, 1024)


def test_real_encoder_on_meta():
    with torch.device("meta"):
        encoder = build_encoder(real_encoder_specs(), load_weights=False)
    assert (encoder.image_size, encoder.grid, encoder.num_patches, encoder.hidden_size) == (336, 24, 576, 2048)
    assert [t.name for t in encoder.towers] == ["clip-vit-l-14-336", "dinov2-vit-l-14-336"]
    assert count_parameters(encoder) == sum(count_parameters(t) for t in encoder.towers)
    specs = encoder.specs()
    assert specs[0]["model"] == "ViT-L-14-336" and specs[0]["pretrained"] == "openai" and specs[0]["layer"] == -2
    assert specs[1]["model"] == "vit_large_patch14_dinov2.lvd142m" and specs[1]["image_size"] == 336


@pytest.mark.parametrize("name", ["clip-vit-l-14-336", "dinov2-vit-l-14-336"])
def test_missing_hub_weights_give_a_clear_error(name, monkeypatch, tmp_path):
    import huggingface_hub.constants

    # Offline with an empty cache: whatever this machine has cached or can reach, nothing loads.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="pass a local checkpoint path"), torch.device("meta"):
        build_tower(TOWERS[name])


def test_real_encoder_at_another_size_and_with_local_weights():
    specs = real_encoder_specs(image_size=224, clip_pretrained="/data/clip.bin", dinov2_pretrained=None)
    assert [s["image_size"] for s in specs] == [224, 224]
    assert specs[0]["pretrained"] == "/data/clip.bin" and specs[1]["pretrained"] is None
    with torch.device("meta"):
        encoder = build_encoder(specs, load_weights=False)
    assert (encoder.grid, encoder.hidden_size) == (16, 2048)
    with pytest.raises(TowerSpecError, match="multiple of the towers' patch size 14"):
        real_encoder_specs(image_size=300)
