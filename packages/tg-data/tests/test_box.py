from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tg_data.box import TOLERANCE, Box, BoxError, PadGeometry, iou_matrix, iou_pairs


# validation ---------------------------------------------------------------------------------------
def test_valid_box_keeps_values() -> None:
    b = Box(0.1, 0.2, 0.3, 0.4)
    assert b.to_list() == [0.1, 0.2, 0.3, 0.4]
    assert b.width == pytest.approx(0.2) and b.height == pytest.approx(0.2)
    assert b.area == pytest.approx(0.04) and b.center == pytest.approx((0.2, 0.3))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((0.5, 0.1, 0.2, 0.4), "inverted"),  # x1 > x2
        ((0.1, 0.5, 0.2, 0.4), "inverted"),  # y1 > y2
        ((0.2, 0.1, 0.2, 0.4), "empty"),  # zero width
        ((math.nan, 0.1, 0.2, 0.4), "finite"),
        ((0.1, 0.1, math.inf, 0.4), "finite"),
        ((0.1, 0.1, 1.0 + 1e-5, 0.4), "[0, 1]"),  # beyond the tolerance
        ((-1e-5, 0.1, 0.2, 0.4), "[0, 1]"),
        ((10, 20, 300, 400), "from_pixels"),  # pixel values are pointed at the converters
    ],
)
def test_invalid_boxes_raise_with_a_reason(values: tuple[float, ...], message: str) -> None:
    with pytest.raises(BoxError, match=re.escape(message)):
        Box(*values)


def test_non_numbers_are_refused() -> None:
    with pytest.raises(BoxError, match="finite numbers"):
        Box("0.1", 0.2, 0.3, 0.4)  # type: ignore[arg-type]


def test_values_within_tolerance_snap_onto_the_border() -> None:
    b = Box(-TOLERANCE / 2, 0.1, 1 + TOLERANCE / 2, 0.9)
    assert b.x1 == 0.0 and b.x2 == 1.0


def test_clipping_happens_only_when_asked() -> None:
    with pytest.raises(BoxError):
        Box.from_list([-0.2, 0.1, 1.3, 0.5])
    b = Box.from_list([-0.2, 0.1, 1.3, 0.5], clip=True)
    assert b.to_list() == [0.0, 0.1, 1.0, 0.5]
    assert Box.clipped(-0.2, 0.1, 1.3, 0.5) == b


def test_clipping_still_refuses_a_box_that_it_empties() -> None:
    with pytest.raises(BoxError, match="inverted or empty"):
        Box.clipped(1.2, 0.1, 1.5, 0.5)
    with pytest.raises(BoxError, match="finite"):
        Box.clipped(math.nan, 0.1, 0.5, 0.5)


def test_from_list_needs_four_values() -> None:
    with pytest.raises(BoxError, match="4 values"):
        Box.from_list([0.1, 0.2, 0.3])


def test_pad_geometry_refuses_empty_images() -> None:
    with pytest.raises(BoxError):
        PadGeometry(0, 10)


# IoU ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75), 0.0625 / 0.4375),  # worked: inter 1/16, union 7/16
        ((0, 0, 1, 1), (0, 0, 0.5, 0.5), 0.25),  # containment: inner area over outer
        ((0.1, 0.1, 0.4, 0.4), (0.1, 0.1, 0.4, 0.4), 1.0),
        ((0, 0, 0.5, 0.5), (0.5, 0, 1, 0.5), 0.0),  # touching edges share no area
        ((0, 0, 0.2, 0.2), (0.6, 0.6, 0.9, 0.9), 0.0),
        ((0, 0, 0.4, 0.2), (0.2, 0, 0.6, 0.2), 1 / 3),  # half overlap along x: 0.04 / 0.12
    ],
)
def test_iou_hand_worked(a: tuple[float, ...], b: tuple[float, ...], expected: float) -> None:
    assert Box(*a).iou(Box(*b)) == pytest.approx(expected)
    assert Box(*b).iou(Box(*a)) == pytest.approx(expected)
    assert iou_pairs([a], [b])[0] == pytest.approx(expected)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.uniform(0, 1, size=(n, 2, 2))
    lo, hi = p.min(axis=1), p.max(axis=1) + 1e-3
    return np.clip(np.concatenate([lo, hi], axis=1)[:, [0, 1, 2, 3]], 0, 1)


def test_vectorised_iou_matches_scalar() -> None:
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 50), _random_boxes(rng, 30)
    m = iou_matrix(a, b)
    assert m.shape == (50, 30)
    for i in range(50):
        for j in range(30):
            assert m[i, j] == pytest.approx(Box(*a[i]).iou(Box(*b[j])), abs=1e-12)
    pairs = iou_pairs(a[:30], b)
    assert np.allclose(pairs, np.diag(m[:30]))
    assert ((m >= 0) & (m <= 1)).all()


def test_iou_in_pixels_equals_iou_normalised_on_a_square_image() -> None:
    a, b = Box(0.1, 0.1, 0.5, 0.6), Box(0.3, 0.2, 0.9, 0.7)
    pa, pb = a.to_pixels(500, 500), b.to_pixels(500, 500)
    assert iou_pairs([pa], [pb])[0] == pytest.approx(a.iou(b))


def test_iou_shape_errors() -> None:
    with pytest.raises(BoxError, match="equal shapes"):
        iou_pairs(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(BoxError, match=r"\(N, 4\)"):
        iou_matrix(np.zeros((2, 3)), np.zeros((3, 4)))


def test_iou_matrix_with_no_boxes_on_one_side() -> None:
    assert iou_matrix(np.zeros((3, 4)), np.zeros((0, 4))).shape == (3, 0)


# frames -------------------------------------------------------------------------------------------
def test_landscape_pixels_round_trip_with_vertical_padding() -> None:
    # 640x480 sits in a 640 square with (640 - 480) / 2 = 80 pixels of padding above and below
    b = Box.from_pixels(10, 20, 110, 220, 640, 480)
    assert b.to_list() == pytest.approx([10 / 640, 100 / 640, 110 / 640, 300 / 640])
    assert b.to_pixels(640, 480) == pytest.approx((10, 20, 110, 220))


def test_portrait_pixels_round_trip_with_horizontal_padding() -> None:
    # 300x500: padding (500 - 300) / 2 = 100 pixels left and right
    b = Box.from_pixels(0, 0, 300, 500, 300, 500)
    assert b.to_list() == pytest.approx([0.2, 0.0, 0.8, 1.0])
    assert b.to_pixels(300, 500) == pytest.approx((0, 0, 300, 500))


def test_square_image_has_no_padding() -> None:
    b = Box.from_pixels(64, 32, 128, 256, 256, 256)
    assert b.to_list() == pytest.approx([0.25, 0.125, 0.5, 1.0])


def test_odd_padding_is_fractional() -> None:
    # 641x480: offset (641 - 480) / 2 = 80.5
    g = PadGeometry(641, 480)
    assert (g.offset_x, g.offset_y, g.side) == (0.0, 80.5, 641)
    b = Box.from_pixels(1, 2, 3, 4, 641, 480)
    assert b.y1 == pytest.approx(82.5 / 641)
    assert b.to_pixels(641, 480) == pytest.approx((1, 2, 3, 4))


def test_random_pixel_round_trips() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        w, h = (int(v) for v in rng.integers(20, 2000, size=2))
        x1, x2 = sorted(rng.uniform(0, w, size=2))
        y1, y2 = sorted(rng.uniform(0, h, size=2))
        if x2 - x1 < 1e-3 or y2 - y1 < 1e-3:
            continue
        b = Box.from_pixels(x1, y1, x2, y2, w, h)
        assert b.to_pixels(w, h) == pytest.approx((x1, y1, x2, y2), abs=1e-9)
        assert b.to_image_relative(w, h) == pytest.approx((x1 / w, y1 / h, x2 / w, y2 / h), abs=1e-12)


def test_xywh_and_image_relative_constructors() -> None:
    assert Box.from_xywh_pixels(10, 20, 100, 200, 640, 480) == Box.from_pixels(10, 20, 110, 220, 640, 480)
    assert Box.from_image_relative(0.5, 0.5, 1.0, 1.0, 640, 480) == Box.from_pixels(320, 240, 640, 480, 640, 480)


def test_pixels_outside_the_image_clip_only_when_asked() -> None:
    # the padded square of a 640x480 image reaches y = -80 .. 560, so -100 is outside even the square
    with pytest.raises(BoxError):
        Box.from_pixels(10, -100, 50, 50, 640, 480)
    b = Box.from_pixels(10, -100, 50, 50, 640, 480, clip=True)
    assert b.to_pixels(640, 480) == pytest.approx((10, 0, 50, 50))


def test_grid1000_conversion() -> None:
    # the grid spans the original image: (250, 500) .. (750, 1000) is pixels (160, 240) .. (480, 480)
    b = Box.from_grid1000([250, 500, 750, 1000], 640, 480)
    assert b.to_pixels(640, 480) == pytest.approx((160, 240, 480, 480))
    assert b.to_list() == pytest.approx([0.25, 320 / 640, 0.75, 560 / 640])
    assert b.to_grid1000(640, 480) == (250, 500, 750, 1000)
    whole = Box.from_grid1000([0, 0, 1000, 1000], 640, 480)
    assert whole.to_list() == pytest.approx([0, 80 / 640, 1, 560 / 640])
    with pytest.raises(BoxError):
        Box.from_grid1000([0, 0, 1000], 640, 480)


def test_resized_pixel_conversion() -> None:
    # a 640x480 image resized to 448x336 (Qwen2-VL style): scale 0.7 both ways
    b = Box.from_resized_pixels([112, 84, 224, 168], resized=(448, 336), original=(640, 480))
    assert b.to_pixels(640, 480) == pytest.approx((160, 120, 320, 240))
    assert b.to_resized_pixels((448, 336), (640, 480)) == pytest.approx((112, 84, 224, 168))


def test_clip_to_image_removes_the_padding_part() -> None:
    # in a 640x480 image the picture spans y in [80/640, 560/640] of the square
    b = Box(0.1, 0.0, 0.5, 0.5).clip_to_image(640, 480)
    assert b.y1 == pytest.approx(80 / 640) and b.to_list()[2:] == pytest.approx([0.5, 0.5])
    with pytest.raises(BoxError):
        Box(0.1, 0.0, 0.5, 0.1).clip_to_image(640, 480)  # lies wholly in the padding
