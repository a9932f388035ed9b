"""Parity with references written apart from the model: a plain Qwen2ForCausalLM with the same weights,
the projector and the object pooling computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Qwen2ForCausalLM

from tg_model.inputs import collate


@pytest.fixture(scope="module")
def plain_qwen(tiny):
    """A stock Qwen2ForCausalLM from the same text config, holding the language model's weights."""
    model, _ = tiny
    reference = Qwen2ForCausalLM(model.config.text_config).eval()
    missing, unexpected = reference.load_state_dict(model.language_model.state_dict(), strict=True)
    assert not missing and not unexpected
    return reference


def _text_batch(tokenizer, texts):
    b = tokenizer(texts, padding=True, return_tensors="pt")
    return b["input_ids"], b["attention_mask"]


def test_text_only_logits_equal_a_plain_qwen2(tiny, plain_qwen):
    model, tokenizer = tiny
    texts = ["<|im_start|>user\nWhere is the blue square?<|im_end|>\n", "A red circle [0.1,0.2,0.3,0.4]."]
    input_ids, attention_mask = _text_batch(tokenizer, texts)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    with torch.no_grad():
        ours = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        reference = plain_qwen(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert torch.equal(ours.logits, reference.logits)
    assert torch.equal(ours.loss, reference.loss)


def test_text_only_logits_are_unchanged_in_training_mode(tiny, plain_qwen):
    """Training mode adds a zero-weighted projector term for text-only batches; it changes no value."""
    model, tokenizer = tiny
    input_ids, attention_mask = _text_batch(tokenizer, ["a green triangle above a big square"])
    model.train()
    try:
        ours = model(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        model.eval()
    with torch.no_grad():
        assert torch.equal(ours.detach(), plain_qwen(input_ids=input_ids, attention_mask=attention_mask).logits)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _projector_by_hand(model, features: torch.Tensor) -> torch.Tensor:
    p = model.projector
    hidden = _gelu(features @ p.linear_1.weight.T + p.linear_1.bias)
    return hidden @ p.linear_2.weight.T + p.linear_2.bias


def _pool_by_hand(features: torch.Tensor, grid: int, out: int) -> torch.Tensor:
    """Adaptive average pooling of a (n, grid*grid, d) token map to (n, out*out, d), cell by cell."""
    n, _, d = features.shape
    fmap = features.reshape(n, grid, grid, d)
    cells = []
    for i in range(out):
        r0, r1 = (i * grid) // out, -((-(i + 1) * grid) // out)
        for j in range(out):
            c0, c1 = (j * grid) // out, -((-(j + 1) * grid) // out)
            cells.append(fmap[:, r0:r1, c0:c1].mean(dim=(1, 2)))
    return torch.stack(cells, dim=1)


def test_projector_is_linear_gelu_linear(tiny):
    model, _ = tiny
    x = torch.randn(3, 5, model.encoder.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.projector(x), _projector_by_hand(model, x))
    assert model.projector.linear_1.in_features == model.encoder.hidden_size
    assert model.projector.linear_2.out_features == model.config.text_config.hidden_size


@pytest.mark.parametrize("object_grid", [1, 2, 3, 8])
def test_object_features_are_the_projected_features_pooled_to_the_object_grid(tiny, object_grid):
    model, _ = tiny
    size, grid = model.encoder.image_size, model.encoder.grid
    pixels = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    saved = model.config.object_grid
    model.config.object_grid = object_grid
    try:
        with torch.no_grad():
            got = model.object_features(pixels)
            projected = _projector_by_hand(model, model.encoder(pixels))
    finally:
        model.config.object_grid = saved
    assert got.shape == (2, object_grid**2, model.config.text_config.hidden_size)
    torch.testing.assert_close(got, _pool_by_hand(projected, grid, object_grid))


def test_multimodal_logits_equal_qwen2_fed_hand_merged_embeddings(tiny, plain_qwen, shapes, sample_encoder_for):
    model, tokenizer = tiny
    encoder = sample_encoder_for(model, tokenizer)
    batch = collate([encoder.encode(shapes.by_task(t), image=shapes.image) for t in ("relation", "caption")],
                    tokenizer.pad_token_id)
    input_ids = batch["input_ids"]
    with torch.no_grad():
        ours = model(input_ids=input_ids, attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"], object_pixel_values=batch["object_pixel_values"]).logits
        embeds = plain_qwen.get_input_embeddings()(input_ids).clone()
        images = _projector_by_hand(model, model.encoder(batch["pixel_values"]))
        objects = _pool_by_hand(_projector_by_hand(model, model.encoder(batch["object_pixel_values"])),
                                model.encoder.grid, model.config.object_grid)
        image_rows = (input_ids == model.config.image_token_id).nonzero().tolist()
        object_rows = (input_ids == model.config.object_token_id).nonzero().tolist()
        for k, (b, t) in enumerate(image_rows):
            embeds[b, t] = images.reshape(-1, images.shape[-1])[k]
        for k, (b, t) in enumerate(object_rows):
            embeds[b, t] = objects.reshape(-1, objects.shape[-1])[k]
        reference = plain_qwen(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    assert len(image_rows) == 2 * model.image_tokens
    assert len(object_rows) == len(batch["object_pixel_values"]) * model.object_tokens > 0
    torch.testing.assert_close(ours, reference)
