"""Generation: the KV cache changes nothing but speed, batching changes nothing, sampling is seeded."""

from __future__ import annotations

import pytest
import torch

from tg_model.inputs import collate

TASKS = ("caption", "obj2coord", "coord2obj")  # no, one and several object images
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def prompts(talkative, shapes, sample_encoder_for):
    model, tokenizer = talkative
    encoder = sample_encoder_for(model, tokenizer)
    return [encoder.encode(shapes.by_task(task), image=shapes.image, for_generation=True) for task in TASKS]


def _inputs(batch, pad_token_id):
    b = collate(batch, pad_token_id, padding_side="left")
    return {
        "input_ids": b["input_ids"],
        "attention_mask": b["attention_mask"],
        "pixel_values": b["pixel_values"],
        "object_pixel_values": b["object_pixel_values"],
    }


def _generate(model, inputs, **kwargs):
    kwargs = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False, **kwargs}
    with torch.no_grad():
        out = model.generate(**inputs, **kwargs)
    return out[:, inputs["input_ids"].shape[1] :]


def test_prompts_differ_in_length_and_object_count(prompts):
    assert len({p.length for p in prompts}) == len(prompts)
    assert [0 if p.object_pixel_values is None else len(p.object_pixel_values) for p in prompts][:2] == [0, 1]
    assert len(prompts[2].object_pixel_values) >= 2


def test_greedy_with_the_kv_cache_equals_greedy_without_it(talkative, prompts):
    model, tokenizer = talkative
    inputs = _inputs(prompts, tokenizer.pad_token_id)
    seen: list[int] = []
    hook = model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    try:
        cached = _generate(model, inputs, use_cache=True)
        cached_lengths, seen[:] = list(seen), []
        uncached = _generate(model, inputs, use_cache=False)
    finally:
        hook.remove()
    prompt_length = inputs["input_ids"].shape[1]
    # the cache is really used: after the prompt, one new token per step; without it, the whole sequence
    assert cached_lengths == [prompt_length] + [1] * (NEW_TOKENS - 1)
    assert seen == [prompt_length + k for k in range(NEW_TOKENS)]
    assert torch.equal(cached, uncached)
    assert cached.shape == (len(prompts), NEW_TOKENS)
    assert len(set(cached.flatten().tolist())) > NEW_TOKENS  # varied output, so equality means something


def test_batched_left_padded_greedy_equals_one_sample_at_a_time(talkative, prompts):
    model, tokenizer = talkative
    batched = _generate(model, _inputs(prompts, tokenizer.pad_token_id))
    for row, prompt in enumerate(prompts):
        alone = _generate(model, _inputs([prompt], tokenizer.pad_token_id))
        assert torch.equal(alone[0], batched[row]), f"prompt {row}"


def test_sampling_is_reproducible_with_a_seed_and_varies_without(talkative, prompts):
    model, tokenizer = talkative
    inputs = _inputs(prompts, tokenizer.pad_token_id)
    runs = {}
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.setdefault(seed, []).append(_generate(model, inputs, do_sample=True, temperature=1.0, top_k=0))
    assert torch.equal(runs[0][0], runs[0][1])
    assert not torch.equal(runs[0][0], runs[1][0])
    assert not torch.equal(runs[0][0], _generate(model, inputs))


def test_generation_never_emits_media_placeholders(talkative, prompts):
    """Even a model that prefers the ``<object>`` token does not generate it: a placeholder has no
    features behind it (re-encoding a sequence holding one without a cache would be refused)."""
    model, tokenizer = talkative
    object_id = model.config.object_token_id
    assert sorted(model.generation_config.suppress_tokens) == sorted([model.config.image_token_id, object_id])
    inputs = _inputs(prompts[:2], tokenizer.pad_token_id)

    def prefer_object(module, args, output):
        output.logits[..., object_id] += 1e4
        return output

    hook = model.language_model.register_forward_hook(prefer_object)
    try:
        unsuppressed = _generate(model, inputs, suppress_tokens=None)
        suppressed = _generate(model, inputs)
        without_cache = _generate(model, inputs, use_cache=False)
    finally:
        hook.remove()
    assert (unsuppressed == object_id).all()
    assert not (suppressed == object_id).any()
    assert not (suppressed == model.config.image_token_id).any()
    assert torch.equal(suppressed, without_cache)
