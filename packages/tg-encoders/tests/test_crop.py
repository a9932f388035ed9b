"""Object images hold exactly the object (margin 0), plus the asked context otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tg_data.box import Box
from tg_encoders import CropError, ImageProcessor, crop_and_zoom, crop_box_pixels

BACKGROUND = (20, 40, 200)
OBJECT = (250, 200, 0)


def _scene(size: tuple[int, int], pixel_box: tuple[int, int, int, int], shape: str) -> Image.Image:
    image = Image.new("RGB", size, BACKGROUND)
    x1, y1, x2, y2 = pixel_box
    draw = ImageDraw.Draw(image)
    if shape == "rectangle":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=OBJECT)
    else:
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=OBJECT)
    return image


def _object_mask(image: Image.Image) -> np.ndarray:
    return np.all(np.asarray(image) == OBJECT, axis=-1)


@pytest.mark.parametrize("size", [(120, 80), (77, 131), (64, 64)])
def test_rectangle_crop_is_exactly_the_object(size):
    pixel_box = (30, 20, 55, 47)
    image = _scene(size, pixel_box, "rectangle")
    box = Box.from_pixels(*pixel_box, *size)
    crop = crop_and_zoom(image, box, margin=0)
    assert crop.size == (25, 27)
    assert _object_mask(crop).all()


@pytest.mark.parametrize("size", [(120, 80), (77, 131)])
def test_ellipse_crop_touches_the_shape_on_every_side_and_leaves_none_outside(size):
    pixel_box = (11, 25, 60, 70)
    image = _scene(size, pixel_box, "ellipse")
    box = Box.from_pixels(*pixel_box, *size)
    left, top, right, bottom = crop_box_pixels(box, *size, margin=0)
    crop = crop_and_zoom(image, box, margin=0)
    mask = _object_mask(crop)
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
    whole = _object_mask(image)
    assert whole.sum() == mask.sum()  # no object pixel left outside the crop
    assert (left, top, right, bottom) == pixel_box


def test_margin_adds_context_relative_to_box_size_and_clips_at_the_border():
    size = (200, 100)
    box = Box.from_pixels(50, 20, 90, 60, *size)  # 40 x 40
    assert crop_box_pixels(box, *size, margin=0.25) == (40, 10, 100, 70)
    corner = Box.from_pixels(0, 0, 40, 20, *size)
    assert crop_box_pixels(corner, *size, margin=0.5) == (0, 0, 60, 30)
    image = _scene(size, (50, 20, 90, 60), "rectangle")
    crop = crop_and_zoom(image, box, margin=0.25)
    assert crop.size == (60, 60)
    mask = _object_mask(crop)
    assert mask[10:50, 10:50].all() and mask.sum() == 40 * 40


def test_tiny_boxes_still_give_a_pixel():
    size = (50, 30)
    sliver = Box.from_pixels(10.2, 5.1, 10.3, 5.15, *size)
    assert crop_box_pixels(sliver, *size, margin=0) == (10, 5, 11, 6)
    edge = Box.from_pixels(49.99, 29.995, 50, 30, *size)
    left, top, right, bottom = crop_box_pixels(edge, *size, margin=0)
    assert (right - left, bottom - top) == (1, 1) and (right, bottom) == (50, 30)
    assert crop_and_zoom(Image.new("RGB", size), sliver).size == (1, 1)


def test_box_in_the_padding_is_a_mismatch():
    # A wide image's square has padding above and below; a box up there is not on this image.
    image = Image.new("RGB", (100, 40))
    in_padding = Box(0.1, 0.0, 0.5, 0.2)  # the image occupies y in [0.3, 0.7]
    with pytest.raises(CropError, match="lies in the padding of this 100x40 image"):
        crop_and_zoom(image, in_padding)
    with pytest.raises(CropError, match=r"tg_data\.box\.Box"):
        crop_and_zoom(image, [0.1, 0.2, 0.3, 0.4])  # type: ignore[arg-type]
    with pytest.raises(CropError, match="margin"):
        crop_and_zoom(image, Box(0.1, 0.4, 0.3, 0.6), margin=-0.1)


def test_crop_then_processor_zooms_the_object_to_fill_the_square():
    size = (160, 90)
    image = _scene(size, (40, 30, 100, 60), "rectangle")  # 60 x 30 object
    crop = crop_and_zoom(image, Box.from_pixels(40, 30, 100, 60, *size), margin=0)
    processed = ImageProcessor(64, resample=Image.Resampling.NEAREST)([crop])
    pixels = (processed.pixel_values[0] * 255).round().byte().permute(1, 2, 0).numpy()
    mask = np.all(pixels == OBJECT, axis=-1)
    assert mask[16:48].all()  # the object spans the full width and the middle half of the height
    assert not mask[:16].any() and not mask[48:].any()
