from __future__ import annotations

import numpy as np
import pytest

from tg_data.box import Box
from tg_data.coords import coordinate_pattern, parse_box, parse_boxes, render_box


def test_render_has_exactly_three_decimals() -> None:
    assert render_box(Box(0.1, 0.2, 0.3, 0.4)) == "[0.100,0.200,0.300,0.400]"
    assert render_box(Box(0, 0, 1, 1)) == "[0.000,0.000,1.000,1.000]"
    assert render_box(Box(0.12345, 0.5, 0.99961, 0.75)) == "[0.123,0.500,1.000,0.750]"


def test_rendered_boxes_match_the_exact_pattern_and_parse_back() -> None:
    rng = np.random.default_rng(0)
    pattern = coordinate_pattern()
    for _ in range(300):
        x1, x2 = sorted(rng.uniform(0, 1, 2))
        y1, y2 = sorted(rng.uniform(0, 1, 2))
        if x2 - x1 < 0.002 or y2 - y1 < 0.002:
            continue
        box = Box(x1, y1, x2, y2)
        text = render_box(box)
        assert pattern.fullmatch(text)
        back = parse_box(f"It is at {text}.")
        assert back is not None
        assert back.to_list() == pytest.approx(box.to_list(), abs=5e-4)


@pytest.mark.parametrize(
    "text",
    [
        "[0.1,0.2,0.3,0.4]",
        "[ 0.1 , 0.2,0.3 ,  0.4 ]",
        "the box is 0.1, 0.2, 0.3, 0.4] ok",  # lost opening bracket
        "the box is [0.1,0.2,0.3,0.4 ok",  # lost closing bracket
        "(0.1, 0.2, 0.3, 0.4)",
        "at 0.1,0.2,0.3,0.4.",  # sentence full stop after the last value
    ],
)
def test_tolerant_forms_parse_to_the_same_box(text: str) -> None:
    parsed = parse_boxes(text)
    assert [b.to_list() for b in parsed.boxes] == [[0.1, 0.2, 0.3, 0.4]]
    assert parsed.misses == []


def test_several_boxes_come_in_order_with_their_spans() -> None:
    text = "a dog [0.500,0.500,0.900,0.900] and a cat [0.1,0.1,0.2,0.2]; also 0.3,0.3,0.4,0.4"
    parsed = parse_boxes(text)
    assert [b.to_list() for b in parsed.boxes] == [[0.5, 0.5, 0.9, 0.9], [0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4]]
    assert [text[s:e] for s, e in parsed.spans] == ["[0.500,0.500,0.900,0.900]", "[0.1,0.1,0.2,0.2]", "0.3,0.3,0.4,0.4"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[100,200,300,400]", "outside [0, 1]"),  # 0-1000 grid: never rescaled
        ("[12, 40, 200, 310]", "outside [0, 1]"),  # pixels
        ("[-0.1,0.2,0.3,0.4]", "outside [0, 1]"),
        ("[0.5,0.5,0.2,0.2]", "x1 < x2"),  # inverted
        ("[0.1,0.2,0.3]", "not four"),
        ("[0.1,0.2,0.3,0.4,0.5]", "not four"),
        ("0.1,0.2,0.3,0.4,0.5", "5 numbers"),  # never the first four of five
        ("[0.1 0.2 0.3 0.4]", "not four"),
        ("[0.1,0.2,0.3,abc]", "not four"),
    ],
)
def test_malformed_or_out_of_range_boxes_are_misses(text: str, reason: str) -> None:
    parsed = parse_boxes(f"answer: {text} done")
    assert parsed.boxes == []
    assert len(parsed.misses) == 1
    assert reason in parsed.misses[0].reason
    assert parsed.misses[0].text.strip().startswith(text[:4])
    assert parse_box(text) is None


def test_misses_and_boxes_are_both_reported() -> None:
    parsed = parse_boxes("[0.1,0.1,0.2,0.2] then [500,500,600,600] then [0.3,0.3,0.4,0.4]")
    assert len(parsed.boxes) == 2 and len(parsed.misses) == 1
    assert parsed.misses[0].start == len("[0.1,0.1,0.2,0.2] then ")
    assert parse_box("[500,500,600,600] then [0.3,0.3,0.4,0.4]") == Box(0.3, 0.3, 0.4, 0.4)


def test_prose_numbers_are_not_boxes() -> None:
    parsed = parse_boxes("There are 3 shapes: 1, 2 and 3, in 2 rows.")
    assert parsed.boxes == [] and parsed.misses == []


def test_no_box_at_all() -> None:
    assert parse_box("I cannot see it.") is None
    assert parse_boxes("").boxes == []
