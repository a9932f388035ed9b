"""The model's frozen-tower feature cache: same outputs, less tower work, never used while towers train."""

from __future__ import annotations

import torch

from tg_model.inputs import collate
from tg_model.presets import build_model


def _counting(model):
    calls = []
    original = model.encoder.forward

    def forward(pixels):
        calls.append(pixels.shape[0])
        return original(pixels)

    model.encoder.forward = forward
    return calls


def test_cached_features_give_the_same_loss_and_gradients_and_skip_the_towers(tiny, shapes, sample_encoder_for):
    model, tokenizer = build_model("tiny", seed=3, text_num_hidden_layers=1)
    model.train()
    encoder = sample_encoder_for(model, tokenizer)

    samples = [shapes.by_task(task) for task in ("rec", "reg", "coord2obj", "obj2coord")]
    batch = collate([encoder.encode(s, image=shapes.image) for s in samples], tokenizer.pad_token_id)
    batch.pop("sample_ids")

    def loss_and_grad():
        model.zero_grad()
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        return loss.detach(), model.projector.linear_1.weight.grad.clone()

    reference = loss_and_grad()
    cache = model.use_feature_cache(16)
    calls = _counting(model)
    for _ in range(2):
        loss, grad = loss_and_grad()
        assert torch.allclose(loss, reference[0], atol=1e-6) and torch.allclose(grad, reference[1], atol=1e-6)
    # four samples of one scene: the image and each distinct crop computed once (one call), then all answered
    assert batch["object_pixel_values"] is not None
    n_images = batch["pixel_values"].shape[0] + batch["object_pixel_values"].shape[0]
    assert sum(calls) == len(cache) < n_images
    assert (cache.misses, cache.hits) == (n_images, n_images)  # the first pass asked for all, the second found all


def test_training_towers_bypass_and_empty_the_cache(tiny, shapes, sample_encoder_for):
    model, tokenizer = build_model("tiny", seed=3, text_num_hidden_layers=1)
    pixels = sample_encoder_for(model, tokenizer).encode(shapes.by_task("rec"), image=shapes.image).pixel_values[None]
    cache = model.use_feature_cache(16)
    model.image_features(pixels)
    assert len(cache) == 1
    model.encoder.unfreeze()
    out = model.image_features(pixels)
    assert len(cache) == 0 and cache.hits == 0
    out.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
    model.encoder.freeze()
    assert model.use_feature_cache(0) is None and model.feature_cache is None
