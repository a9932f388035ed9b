"""From shapes-world samples on disk to model inputs: images, object crops, refusals, padding."""

from __future__ import annotations

import pytest
import torch

from tg_encoders.crop import crop_and_zoom
from tg_encoders.processing import ImageProcessor
from tg_model.inputs import collate
from tg_model.template import IGNORE_INDEX, SampleRefused


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory, shapes):
    root = tmp_path_factory.mktemp("shapes")
    shapes.image.save(root / "scene.png")
    (root / "broken.png").write_bytes(b"not a png at all")
    return root


def test_a_sample_from_disk_gets_its_image_and_one_crop_per_object_placeholder(tiny, shapes, on_disk,
                                                                               sample_encoder_for):
    model, tokenizer = tiny
    encoder = sample_encoder_for(model, tokenizer, image_root=str(on_disk))
    sample = shapes.by_task("coord2obj")
    encoded = encoder.encode(sample)
    size = model.encoder.image_size
    assert encoded.id == sample.id
    assert encoded.pixel_values.shape == (3, size, size)
    assert encoded.object_pixel_values.shape == (len(sample.object_images), 3, size, size)
    ids = encoded.input_ids.tolist()
    assert ids.count(model.config.image_token_id) == model.image_tokens
    assert ids.count(model.config.object_token_id) == len(sample.object_images) * model.config.object_grid**2
    processor = ImageProcessor(size)
    assert torch.equal(encoded.pixel_values, processor.process_one(shapes.image)[0])
    for k, obj in enumerate(sample.object_images):
        crop = crop_and_zoom(shapes.image, obj.box, model.config.object_margin)
        assert torch.equal(encoded.object_pixel_values[k], processor.process_one(crop)[0])
    # the same sample with the image handed over in memory encodes identically
    in_memory = encoder.encode(sample, image=shapes.image)
    assert torch.equal(in_memory.input_ids, encoded.input_ids)
    assert torch.equal(in_memory.object_pixel_values, encoded.object_pixel_values)


def test_for_generation_drops_the_answer_and_ends_with_the_assistant_header(tiny, shapes, sample_encoder_for):
    model, tokenizer = tiny
    encoder = sample_encoder_for(model, tokenizer)
    sample = shapes.by_task("rec")
    prompt = encoder.encode(sample, image=shapes.image, for_generation=True)
    training = encoder.encode(sample, image=shapes.image)
    text = tokenizer.decode(prompt.input_ids.tolist())
    assert text.endswith("<|im_start|>assistant\n")
    assert sample.turns[-1].text not in text
    assert torch.equal(training.input_ids[: prompt.length], prompt.input_ids)
    assert (prompt.labels == IGNORE_INDEX).all()


def test_the_saved_image_placement_decides_where_the_encoder_puts_the_image(shapes, sample_encoder_for, tmp_path):
    """Set when the model is built, saved with it: training and every later prompt agree."""
    from tg_model.modeling import TinyGroundingGPTForCausalLM
    from tg_model.presets import build_model

    model, tokenizer = build_model("tiny", seed=0, image_placement="after_text")
    model.save_pretrained(tmp_path)
    loaded = TinyGroundingGPTForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.image_placement == "after_text"
    sample = shapes.by_task("rec")
    question = sample.turns[0].text.replace("<image>", "").strip()
    for generation in (False, True):
        ids = sample_encoder_for(loaded, tokenizer).encode(sample, image=shapes.image, for_generation=generation)
        ids = ids.input_ids.tolist()
        first_image = ids.index(loaded.config.image_token_id)
        before = tokenizer.decode(ids[:first_image])
        assert before.endswith(f"user\n{question}\n")  # the question, then the image rows
        assert ids[first_image : first_image + loaded.image_tokens] == [loaded.config.image_token_id] * loaded.image_tokens


@pytest.mark.parametrize(("image", "reason"), [("missing.png", "missing_image"), ("broken.png", "broken_image")])
def test_unreadable_images_refuse_the_sample_with_a_reason(tiny, shapes, on_disk, sample_encoder_for, image, reason):
    model, tokenizer = tiny
    encoder = sample_encoder_for(model, tokenizer, image_root=str(on_disk))
    sample = shapes.by_task("caption")
    bad = type(sample)(id="bad-1", turns=sample.turns, image=image)
    with pytest.raises(SampleRefused, match=rf"'bad-1'.*{image}") as info:
        encoder.encode(bad)
    assert info.value.reason == reason


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_pads_on_the_asked_side_and_keeps_media_in_sample_order(tiny, shapes, sample_encoder_for, side):
    model, tokenizer = tiny
    encoder = sample_encoder_for(model, tokenizer)
    samples = [shapes.by_task(t) for t in ("relation", "caption", "coord2obj")]
    encoded = [encoder.encode(s, image=shapes.image) for s in samples]
    batch = collate(encoded, tokenizer.pad_token_id, padding_side=side)
    length = max(e.length for e in encoded)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, length)
    for row, e in enumerate(encoded):
        span = slice(length - e.length, length) if side == "left" else slice(0, e.length)
        assert torch.equal(batch["input_ids"][row, span], e.input_ids)
        assert torch.equal(batch["labels"][row, span], e.labels)
        assert batch["attention_mask"][row].sum() == e.length == batch["attention_mask"][row, span].sum()
        assert (batch["input_ids"][row][batch["attention_mask"][row] == 0] == tokenizer.pad_token_id).all()
        assert (batch["labels"][row][batch["attention_mask"][row] == 0] == IGNORE_INDEX).all()
    assert torch.equal(batch["pixel_values"], torch.stack([e.pixel_values for e in encoded]))
    assert torch.equal(batch["object_pixel_values"],
                       torch.cat([e.object_pixel_values for e in encoded if e.object_pixel_values is not None]))
    assert batch["sample_ids"] == [s.id for s in samples]


def test_collate_rejects_an_unknown_padding_side(tiny, shapes, sample_encoder_for):
    model, tokenizer = tiny
    encoded = sample_encoder_for(model, tokenizer).encode(shapes.by_task("caption"), image=shapes.image)
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right'"):
        collate([encoded], tokenizer.pad_token_id, padding_side="middle")


def test_the_pixel_cache_answers_a_file_read_before_and_its_crops_once_cut(
    tiny, shapes, tmp_path, sample_encoder_for
):
    model, tokenizer = tiny
    shapes.image.save(tmp_path / "scene.png")
    plain = sample_encoder_for(model, tokenizer, image_root=str(tmp_path))
    cached = sample_encoder_for(model, tokenizer, image_root=str(tmp_path), image_cache_mb=1)
    rec, objects = shapes.by_task("rec"), shapes.by_task("coord2obj")
    first = cached.encode(rec)
    assert torch.equal(first.pixel_values, plain.encode(rec).pixel_values)
    (tmp_path / "scene.png").rename(tmp_path / "moved.png")
    # the file is gone: only the cache can answer, and a sample needing crops says what is missing
    assert torch.equal(cached.encode(rec).pixel_values, first.pixel_values)
    assert cached.pixel_cache.hits == 1
    with pytest.raises(SampleRefused, match="does not exist"):
        cached.encode(objects)
    (tmp_path / "moved.png").rename(tmp_path / "scene.png")
    with_crops = cached.encode(objects)
    expected = plain.encode(objects)
    assert torch.equal(with_crops.pixel_values, expected.pixel_values)
    assert torch.equal(with_crops.object_pixel_values, expected.object_pixel_values)
    # read once, the crops are remembered too: the file can go again
    (tmp_path / "scene.png").rename(tmp_path / "moved.png")
    again = cached.encode(objects)
    assert torch.equal(again.object_pixel_values, expected.object_pixel_values)
    assert torch.equal(again.pixel_values, expected.pixel_values)
