"""Presets: the tiny one runs; the real ones are built on the meta device and their sizes checked
against parameter formulas written out independently of the libraries."""

from __future__ import annotations

import math

import pytest
import torch

from tg_encoders.errors import TowerSpecError
from tg_model.inputs import collate
from tg_model.modeling import TinyGroundingGPTForCausalLM
from tg_model.presets import PRESETS, QWEN_SYSTEM_PROMPT, build_model, get_preset

# Qwen2.5-Instruct: (hidden, layers, heads, kv heads, intermediate, vocab, tied embeddings, published size)
REAL = {
    "tgpt-1.5b": (1536, 28, 12, 2, 8960, 151936, True, 1.54e9),
    "tgpt-3b": (2048, 36, 16, 2, 11008, 151936, True, 3.09e9),
    "tgpt-7b": (3584, 28, 28, 4, 18944, 152064, False, 7.62e9),
}


def qwen2_parameters(hidden, layers, heads, kv_heads, intermediate, vocab, tied) -> int:
    """Qwen2: q/k/v projections with bias, o without; SwiGLU MLP; two RMSNorms per layer; final norm."""
    kv = kv_heads * hidden // heads
    attention = (hidden * hidden + hidden) + 2 * (hidden * kv + kv) + hidden * hidden
    mlp = 3 * hidden * intermediate
    layer = attention + mlp + 2 * hidden
    return vocab * hidden * (1 if tied else 2) + layers * layer + hidden


def vit_block_parameters(width: int, mlp_ratio: int = 4) -> int:
    """Pre-norm ViT block: two LayerNorms, fused qkv with bias, output projection, two-layer MLP."""
    hidden = width * mlp_ratio
    return 2 * 2 * width + (3 * width * width + 3 * width) + (width * width + width) + (
        width * hidden + hidden
    ) + (hidden * width + width)


def clip_vit_l14_without_last_block(image_size: int = 336) -> int:
    """OpenAI CLIP ViT-L/14 visual tower up to its penultimate block (no ln_post, no projection)."""
    width, patch = 1024, 14
    tokens = (image_size // patch) ** 2 + 1
    stem = 3 * patch * patch * width + width + tokens * width + 2 * width  # conv (no bias), cls, pos, ln_pre
    return stem + 23 * vit_block_parameters(width)


def dinov2_vit_l14(image_size: int = 336) -> int:
    """DINOv2 ViT-L/14: conv stem with bias, cls, position embeddings, 24 blocks with two layer
    scales each, final norm; no registers, no head."""
    width, patch = 1024, 14
    tokens = (image_size // patch) ** 2 + 1
    stem = 3 * patch * patch * width + width + width + tokens * width
    return stem + 24 * (vit_block_parameters(width) + 2 * width) + 2 * width


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_tiny_builds_and_runs_forward_and_backward(shapes, sample_encoder_for):
    model, tokenizer = build_model("tiny", seed=0)
    config = model.config
    assert config.vocab_size == len(tokenizer) == model.get_input_embeddings().num_embeddings
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert config.object_token_id == tokenizer.convert_tokens_to_ids("<object>")
    assert model.image_tokens == model.encoder.grid**2
    assert model.object_tokens == config.object_grid**2 == get_preset("tiny").object_grid ** 2
    assert config.context_length == get_preset("tiny").context_length
    encoder = sample_encoder_for(model, tokenizer)
    batch = collate([encoder.encode(shapes.by_task(t), image=shapes.image) for t in ("rec", "relation")],
                    tokenizer.pad_token_id)
    model.train()
    out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values",
                                          "object_pixel_values")})
    assert out.logits.shape == (*batch["input_ids"].shape, config.vocab_size)
    assert torch.isfinite(out.logits).all()
    # an untrained model is close to uniform over the vocabulary
    assert abs(out.loss.item() - math.log(config.vocab_size)) < 1.0
    out.loss.backward()
    assert model.projector.linear_1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_presets_build_on_meta_with_their_dims_and_parameter_counts(name):
    hidden, layers, heads, kv_heads, intermediate, vocab, tied, published = REAL[name]
    with torch.device("meta"):
        model, tokenizer = build_model(name, load_weights=False)
    assert tokenizer is None
    assert all(p.is_meta for p in model.parameters())
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        hidden, layers, heads, kv_heads,
    )
    assert (text.intermediate_size, text.vocab_size, text.tie_word_embeddings) == (intermediate, vocab, tied)
    assert model.config.system_prompt == QWEN_SYSTEM_PROMPT
    assert (model.encoder.image_size, model.encoder.grid, model.encoder.hidden_size) == (336, 24, 2048)
    assert (model.image_tokens, model.object_tokens) == (576, 144)

    llm = count(model.language_model)
    assert llm == qwen2_parameters(hidden, layers, heads, kv_heads, intermediate, vocab, tied)
    assert abs(llm - published) / published < 0.01
    clip, dinov2 = model.encoder.towers
    assert count(clip) == clip_vit_l14_without_last_block() == pytest.approx(290.9e6, rel=1e-3)
    assert count(dinov2) == dinov2_vit_l14() == pytest.approx(303.6e6, rel=1e-3)
    assert count(model.projector) == (2048 * hidden + hidden) + (hidden * hidden + hidden)
    assert count(model) == llm + count(clip) + count(dinov2) + count(model.projector)


def test_overrides_reach_the_config_and_the_text_config():
    model, _ = build_model("tiny", object_grid=4, object_margin=0.25, text_num_hidden_layers=1)
    assert (model.config.object_grid, model.config.object_margin) == (4, 0.25)
    assert model.object_tokens == 16
    assert model.config.text_config.num_hidden_layers == 1
    assert len(model.language_model.model.layers) == 1


@pytest.mark.parametrize("override", ["text_hiden_size", "objct_grid"])
def test_a_misspelt_override_is_named_not_ignored(override: str):
    # configs take unknown keyword arguments silently: without the check the preset's value stays
    with pytest.raises(ValueError, match=rf"preset 'tiny': unknown override\(s\) \['{override}'\]; model fields: .*object_grid"):
        build_model("tiny", load_weights=False, **{override: 3})


def test_encoder_overrides_change_the_towers_and_survive_a_reload(tmp_path):
    model, _ = build_model("tiny", encoder_patch_size=16, encoder_width=32)
    assert model.image_tokens == (64 // 16) ** 2
    assert all(tw.grid == 4 for tw in model.encoder.towers)
    model.save_pretrained(tmp_path)
    reloaded = TinyGroundingGPTForCausalLM.from_pretrained(tmp_path)
    assert reloaded.image_tokens == 16
    assert not any(p.requires_grad for p in reloaded.encoder.parameters())  # frozen, as it was saved
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(model.encoder(x), reloaded.encoder(x))
    with pytest.raises(ValueError, match=r"preset 'tiny': bad encoder override .*patch_sise"):
        build_model("tiny", encoder_patch_sise=16)


def test_tiny_towers_load_local_weights_and_stay_frozen(tmp_path):
    """The tiny towers have no published weights, but trained ones (a local path) load like any checkpoint."""
    from tg_encoders import save_tower_weights

    random_model, _ = build_model("tiny", seed=0)
    trained = random_model.encoder.towers[0]
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_tower_weights(trained, tmp_path / "tower-0.safetensors")

    model, _ = build_model("tiny", seed=0, encoder_weights={0: str(path)})
    reference, _ = build_model("tiny", seed=0)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.encoder.towers[0](x), trained(x))  # tower 0 from the file
        assert torch.equal(model.encoder.towers[1](x), reference.encoder.towers[1](x))  # tower 1 as built
        assert not torch.allclose(model.encoder.towers[0](x), reference.encoder.towers[0](x), atol=1e-3)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert model.config.encoder_specs[0]["pretrained"] is None  # the weights travel in the model's own file
    with pytest.raises(TowerSpecError, match=r"tower-9\.safetensors.* is not a file"):
        build_model("tiny", encoder_weights={0: str(tmp_path / "tower-9.safetensors")})


def test_unknown_preset_names_list_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown preset 'tgpt-70b'.*tgpt-1\.5b"):
        build_model("tgpt-70b", load_weights=False)
    assert set(PRESETS) >= {"tiny", *REAL}
