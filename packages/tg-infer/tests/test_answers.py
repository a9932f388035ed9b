from __future__ import annotations

import pytest

from tg_data.box import Box
from tg_infer.answers import find_boxes, label_before, pixel_box


def test_boxes_come_back_in_pixels_of_the_original_image() -> None:
    # An 80x60 image is padded to an 80x80 square with 10 rows above and below it.
    [found] = find_boxes("[0.250,0.125,0.750,0.625]", 80, 60, default_label="the red square")
    assert found.box == Box(0.25, 0.125, 0.75, 0.625)
    assert found.pixels == pytest.approx((20.0, 0.0, 60.0, 40.0))
    assert found.coords == "[0.250,0.125,0.750,0.625]"
    assert found.label == "the red square"  # no words before the box: the caller's label


def test_pixels_are_clamped_onto_the_picture() -> None:
    # The box reaches into the bottom padding of a 100x50 image (rows 25..75 of the square).
    assert pixel_box(Box(0.1, 0.5, 0.3, 0.9), 100, 50) == pytest.approx((10.0, 25.0, 30.0, 50.0))


def test_each_box_is_labelled_with_the_phrase_before_it() -> None:
    text = ("There are 3 shapes: a green star [0.123,0.038,0.375,0.290], a green star [0.129,0.795,0.305,0.971] "
            "and a blue diamond [0.561,0.359,0.653,0.458]. The topmost star is at [0.123,0.038,0.375,0.290].")
    found = find_boxes(text, 171, 224)
    assert [f.label for f in found] == ["green star", "green star", "blue diamond", "topmost star"]
    assert [f.coords for f in found] == ["[0.123,0.038,0.375,0.290]", "[0.129,0.795,0.305,0.971]",
                                         "[0.561,0.359,0.653,0.458]", "[0.123,0.038,0.375,0.290]"]


def test_invalid_boxes_are_not_reported() -> None:
    assert find_boxes("at [0.5,0.5,0.2,0.9] or [120,30,400,500]", 10, 10) == []
    assert label_before("A large red circle ", 19) == "large red circle"
