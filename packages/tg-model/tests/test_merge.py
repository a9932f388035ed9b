"""Merging image and object features into the token embeddings, against a naive per-token reference."""

from __future__ import annotations

import pytest
import torch

from tg_model.modeling import MediaMismatch

# (has image, number of object images) per sample; the last one is text only
LAYOUTS = [(True, 0), (True, 1), (True, 3), (False, 0)]


def _batch(model, layouts, padding_side="right", seed=0):
    """Random text around placeholder spans at random places; images and crops in sample order."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    vocab = model.get_input_embeddings().num_embeddings
    special = {cfg.image_token_id, cfg.object_token_id, cfg.text_config.pad_token_id}

    def text(n):
        ids = torch.randint(0, vocab, (n,), generator=g)
        return [int(t) for t in ids if int(t) not in special]

    rows = []
    for has_image, n_objects in layouts:
        ids = text(3)
        if has_image:
            ids += [cfg.image_token_id] * model.image_tokens + text(4)
        for _ in range(n_objects):
            ids += text(2) + [cfg.object_token_id] * model.object_tokens
        rows.append(ids + text(int(torch.randint(1, 6, (1,), generator=g))))
    length = max(map(len, rows))
    input_ids = torch.full((len(rows), length), cfg.text_config.pad_token_id)
    for r, ids in enumerate(rows):
        span = slice(length - len(ids), length) if padding_side == "left" else slice(0, len(ids))
        input_ids[r, span] = torch.tensor(ids)
    size = model.encoder.image_size
    n_images = sum(h for h, _ in layouts)
    n_objects = sum(n for _, n in layouts)
    pixel_values = torch.rand(n_images, 3, size, size, generator=g) if n_images else None
    object_pixel_values = torch.rand(n_objects, 3, size, size, generator=g) if n_objects else None
    counts = torch.tensor([[int(h), n] for h, n in layouts])
    return input_ids, pixel_values, object_pixel_values, counts


def _naive_merge(model, input_ids, pixel_values, object_pixel_values, layouts):
    """The obvious loop: walk every token of every sample, features encoded one sample at a time."""
    cfg = model.config
    table = model.get_input_embeddings().weight
    out = torch.empty(*input_ids.shape, table.shape[1])
    image_k = object_k = 0
    for b, (has_image, n_objects) in enumerate(layouts):
        images = model.image_features(pixel_values[image_k : image_k + 1]) if has_image else None
        objects = (
            model.object_features(object_pixel_values[object_k : object_k + n_objects]) if n_objects else None
        )
        image_k += int(has_image)
        object_k += n_objects
        seen_image = seen_object = 0
        for t in range(input_ids.shape[1]):
            token = int(input_ids[b, t])
            if token == cfg.image_token_id:
                out[b, t] = images[0, seen_image]
                seen_image += 1
            elif token == cfg.object_token_id:
                out[b, t] = objects[seen_object // model.object_tokens, seen_object % model.object_tokens]
                seen_object += 1
            else:
                out[b, t] = table[token]
        assert seen_image == (model.image_tokens if has_image else 0)
        assert seen_object == n_objects * model.object_tokens
    return out


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_vectorised_merge_equals_the_naive_per_token_reference(tiny, padding_side):
    model, _ = tiny
    input_ids, pixels, objects, counts = _batch(model, LAYOUTS, padding_side)
    with torch.no_grad():
        merged = model.embed_inputs(input_ids, pixels, objects)
        reference = _naive_merge(model, input_ids, pixels, objects, LAYOUTS)
        assert torch.equal(model.embed_inputs(input_ids, pixels, objects, media_counts=counts), merged)
    assert merged.shape == reference.shape
    torch.testing.assert_close(merged, reference)
    # every placeholder row really was replaced: none keeps the placeholder's own embedding
    table = model.get_input_embeddings().weight
    for token_id in (model.config.image_token_id, model.config.object_token_id):
        rows = merged[input_ids == token_id]
        assert not torch.isclose(rows, table[token_id].expand_as(rows)).all(dim=-1).any()


def test_text_only_batch_is_plain_token_embeddings(tiny):
    model, _ = tiny
    input_ids, _, _, _ = _batch(model, [(False, 0), (False, 0)])
    with torch.no_grad():
        merged = model.embed_inputs(input_ids)
    assert torch.equal(merged, model.get_input_embeddings()(input_ids))


def test_batches_with_only_object_images_merge_too(tiny):
    model, _ = tiny
    layouts = [(False, 2), (False, 0), (False, 1)]
    input_ids, pixels, objects, _ = _batch(model, layouts)
    assert pixels is None
    with torch.no_grad():
        torch.testing.assert_close(
            model.embed_inputs(input_ids, None, objects), _naive_merge(model, input_ids, None, objects, layouts)
        )


def test_a_sample_whose_counts_disagree_with_its_placeholders_is_named(tiny):
    model, _ = tiny
    input_ids, pixels, objects, counts = _batch(model, LAYOUTS)
    counts[2, 1] = 2  # the sample with three object spans claims two object images
    ids = ["cat", "dog", "shapes-0007", "text"]
    with pytest.raises(MediaMismatch, match=r"sample 'shapes-0007': .*object token\(s\) but 2 object\(s\)"):
        model.embed_inputs(input_ids, pixels, objects[:5], media_counts=counts, sample_ids=ids)
    counts[2, 1] = 3
    counts[3, 0] = 1  # the text-only sample claims an image
    with pytest.raises(MediaMismatch, match="sample 'text': 0 image token"):
        model.embed_inputs(input_ids, pixels, objects, media_counts=counts, sample_ids=ids)


def test_a_broken_placeholder_span_is_named_without_counts(tiny):
    model, _ = tiny
    input_ids, pixels, objects, _ = _batch(model, LAYOUTS)
    row = 1  # the sample with one object image loses one of its object rows
    position = int((input_ids[row] == model.config.object_token_id).nonzero()[0, 0])
    input_ids[row, position] = 7
    with pytest.raises(MediaMismatch, match=r"samples with broken object spans: \['one-object'\]"):
        model.embed_inputs(input_ids, pixels, objects, sample_ids=["a", "one-object", "c", "d"])
    with pytest.raises(MediaMismatch, match=r"\['row 1'\]"):
        model.embed_inputs(input_ids, pixels, objects)


@pytest.mark.parametrize("what", ["image", "object"])
def test_more_or_fewer_features_than_placeholders_is_an_error(tiny, what):
    model, _ = tiny
    input_ids, pixels, objects, _ = _batch(model, LAYOUTS)
    if what == "image":
        args = [(pixels[:-1], objects), (torch.cat([pixels, pixels[:1]]), objects)]
    else:
        args = [(pixels, objects[:-1]), (pixels, torch.cat([objects, objects[:1]]))]
    for p, o in args:
        with pytest.raises(MediaMismatch, match=f"batch has .* {what} token"):
            model.embed_inputs(input_ids, p, o)


def test_forward_reports_the_mismatch_with_the_sample_name(tiny):
    model, _ = tiny
    input_ids, pixels, objects, counts = _batch(model, LAYOUTS)
    counts[0, 1] = 1
    with pytest.raises(MediaMismatch, match="sample 'first'"):
        model(input_ids=input_ids, pixel_values=pixels, object_pixel_values=objects, media_counts=counts,
              sample_ids=["first", "b", "c", "d"])
