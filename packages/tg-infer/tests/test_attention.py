"""Attention maps: the right rows, the right columns, normalised, and laid over the right pixels.

To know where the mass must be, the last layer is rebuilt so that every head attends from
position m to position m - d and nowhere else: queries and keys become constant vectors (their
weights zeroed, their biases set) that rotary embedding turns into a function of m - n alone,
peaked at m - n = d. Then a row's mass lands on the patch d positions before it, which the test
computes from token positions on its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tg_data.box import Box
from tg_data.coords import parse_boxes
from tg_infer.attention import AttentionMap, patch_attention
from tg_infer.errors import InferError
from tg_infer.predictor import Predictor
from tg_infer.requests import Request

ANSWER = "A red star [0.100,0.200,0.300,0.400] here."
PROMPT = "Output the coordinate of the red star."


@pytest.fixture(scope="module")
def aimed(model_dir: Path) -> Predictor:
    return Predictor.load(model_dir)


def aim_last_layer(predictor: Predictor, offset: int, amplitude: float = 24.0) -> None:
    """Make every head of the last layer attend from position m to position m - ``offset``."""
    lm = predictor.model.language_model
    attn = lm.model.layers[-1].self_attn
    inv_freq = lm.model.rotary_emb.inv_freq.double()  # (head_dim / 2,)
    half = inv_freq.numel()
    angle = -offset * inv_freq  # q . k = a^2 sum_i cos((n - m) theta_i - angle_i): peak at n = m - offset
    q = torch.cat([amplitude * torch.cos(angle), amplitude * torch.sin(angle)])
    k = torch.cat([torch.full((half,), amplitude, dtype=torch.double), torch.zeros(half, dtype=torch.double)])
    with torch.no_grad():
        attn.q_proj.weight.zero_()
        attn.k_proj.weight.zero_()
        attn.q_proj.bias.copy_(q.repeat(attn.q_proj.out_features // (2 * half)).float())
        attn.k_proj.bias.copy_(k.repeat(attn.k_proj.out_features // (2 * half)).float())


def positions(predictor: Predictor, prompt: str, image: Image.Image, objects=()) -> tuple[list[int], list[int]]:
    """(all input ids with the answer, image patch positions), computed apart from the code under test."""
    prompt_ids = predictor.prepare(Request.ask(prompt, image, objects)).encoded.input_ids.tolist()
    ids = prompt_ids + predictor.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    return ids, [i for i, t in enumerate(ids) if t == predictor.config.image_token_id]


def expected_map(rows: list[int], offset: int, patches: list[int], grid: int) -> np.ndarray:
    hits = np.zeros(grid * grid)
    for r in rows:
        if r - offset in patches:
            hits[patches.index(r - offset)] += 1
    return (hits / hits.sum()).reshape(grid, grid)


def test_patch_attention_sums_the_chosen_rows_over_heads() -> None:
    att = torch.zeros(2, 6, 6)  # heads, queries, keys; keys 1..4 are "patches"
    att[0, 5, 2] = 1.0
    att[1, 5, 3] = 3.0
    att[:, 4, 1] = 5.0  # a row that is not chosen
    grid = patch_attention(att, rows=[5], patch_positions=[1, 2, 3, 4])
    assert np.allclose(grid, [0, 0.25, 0.75, 0])
    with pytest.raises(InferError, match="no attention on the image"):
        patch_attention(att, rows=[0], patch_positions=[1, 2, 3, 4])


def test_answer_rows_land_where_the_aimed_heads_point(aimed: Predictor, make_image) -> None:
    image = make_image(64, 32, 5)
    ids, patches = positions(aimed, PROMPT, image)
    grid = aimed.model.encoder.grid
    answer_start = len(ids) - len(aimed.tokenizer(ANSWER, add_special_tokens=False)["input_ids"])
    offset = answer_start - (patches[0] + 7)  # the first answer token looks at patch 7
    aim_last_layer(aimed, offset)
    amap = aimed.attention(image, PROMPT, answer=ANSWER, rows="answer")
    assert amap.grid.shape == (grid, grid)
    assert amap.grid.sum() == pytest.approx(1.0, abs=1e-6)
    assert amap.rows == list(range(answer_start, len(ids)))  # every answer token is visible text here
    assert amap.answer == ANSWER
    assert np.allclose(amap.grid, expected_map(amap.rows, offset, patches, grid), atol=1e-3)
    assert amap.grid.flat[7] > 0 and amap.grid.flat[:7].sum() == pytest.approx(0.0, abs=1e-4)


def test_coordinate_rows_are_the_box_tokens(aimed: Predictor, make_image) -> None:
    image = make_image(40, 40, 6)
    ids, patches = positions(aimed, PROMPT, image)
    answer_ids = aimed.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    answer_start = len(ids) - len(answer_ids)
    # Independently: the tokens whose text overlaps the coordinate span.
    start, end = parse_boxes(ANSWER).spans[0]
    spans, text = [], ""
    for k in range(len(answer_ids)):
        longer = aimed.tokenizer.decode(answer_ids[: k + 1])
        spans.append((len(text), len(longer)))
        text = longer
    coord_rows = [answer_start + k for k, (s, e) in enumerate(spans) if s < end and start < e]
    offset = coord_rows[0] - (patches[0] + 20)
    aim_last_layer(aimed, offset)
    coords = aimed.attention(image, PROMPT, answer=ANSWER, rows="coords")
    assert coords.rows == coord_rows
    assert "".join(coords.tokens).strip() == ANSWER[start:end]
    assert np.allclose(coords.grid, expected_map(coord_rows, offset, patches, aimed.model.encoder.grid), atol=1e-3)
    text_map = aimed.attention(image, PROMPT, answer=ANSWER, rows="text")
    assert set(text_map.rows).isdisjoint(coord_rows) and text_map.rows
    assert "[" not in "".join(text_map.tokens)


def test_object_image_rows(aimed: Predictor, make_image) -> None:
    image = make_image(48, 40, 7)
    prompt = "What is <object>?"
    objects = [Box(0.2, 0.2, 0.6, 0.6)]
    from tg_data.schema import ObjectRef, Show

    ids, patches = positions(aimed, prompt, image, [ObjectRef(objects[0], Show.IMAGE.value)])
    object_rows = [i for i, t in enumerate(ids) if t == aimed.config.object_token_id]
    offset = object_rows[0] - (patches[0] + 40)
    aim_last_layer(aimed, offset)
    amap = aimed.attention(image, prompt, answer=ANSWER, rows="objects", objects=objects)
    assert amap.rows == object_rows
    assert np.allclose(amap.grid, expected_map(object_rows, offset, patches, aimed.model.encoder.grid), atol=1e-3)
    with pytest.raises(InferError, match="no object image"):
        aimed.attention(image, PROMPT, answer=ANSWER, rows="objects")
    with pytest.raises(InferError, match="no coordinates"):
        aimed.attention(image, PROMPT, answer="A red star.", rows="coords")


def test_the_model_is_back_on_its_fast_attention_afterwards(aimed: Predictor, make_image) -> None:
    before = aimed.model.config._attn_implementation
    aimed.attention(make_image(16, 16, 1), PROMPT, answer=ANSWER)
    assert aimed.model.config._attn_implementation == before


def test_own_answer_is_used_when_none_is_given(predictor: Predictor, make_image) -> None:
    image = make_image(32, 32, 2)
    own = predictor.generate([Request.ask(PROMPT, image, max_new_tokens=5)])[0]
    amap = predictor.attention(image, PROMPT, max_new_tokens=5)
    assert amap.answer == own.text
    assert amap.grid.sum() == pytest.approx(1.0, abs=1e-6)


def test_overlay_puts_the_heat_on_the_right_pixels(tmp_path: Path) -> None:
    """A 64x32 image sits in the middle of its 64x64 square: patch row 3 of 8 covers its rows 8..15."""
    grid = np.zeros((8, 8))
    grid[3, 5] = 1.0
    image = Image.new("RGB", (64, 32), (128, 128, 128))
    amap = AttentionMap(grid, "", [], [], "answer", image)
    out = tmp_path / "map.png"
    amap.save(str(out))
    overlay = Image.open(out)
    assert overlay.format == "PNG" and overlay.size == (64, 32)
    hot = overlay.getpixel((5 * 8 + 4, 3 * 8 + 4 - 16))
    cold = overlay.getpixel((1 * 8 + 4, 4 * 8 + 4 - 16))
    assert hot[0] > hot[2] + 40  # red end of the colour map
    assert cold[2] > cold[0] + 40  # blue end
