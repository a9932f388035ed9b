"""The processor pads to the exact centred square of tg-data's frame, so boxes map onto pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tg_data.box import Box, PadGeometry
from tg_encoders import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_COLOUR,
    ImageInputError,
    ImageProcessor,
    normalise,
)


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Half-open pixel box ``(x1, y1, x2, y2)`` around the true cells of a 2-D mask."""
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def test_batch_shape_range_and_geometry():
    images = [Image.new("RGB", (100, 50), (255, 255, 255)), Image.new("RGB", (30, 70), (0, 0, 0))]
    out = ImageProcessor(32)(images)
    assert out.pixel_values.shape == (2, 3, 32, 32)
    assert out.pixel_values.dtype == torch.float32
    assert out.pixel_values.min() >= 0.0 and out.pixel_values.max() <= 1.0
    assert out.geometry == [PadGeometry(100, 50), PadGeometry(30, 70)]
    assert len(out) == 2


def test_pixels_are_not_normalised_and_padding_has_the_clip_mean_colour():
    assert tuple(int(255 * m) for m in CLIP_MEAN) == PAD_COLOUR  # LLaVA's expand2square colour
    out = ImageProcessor(100)([Image.new("RGB", (100, 50), (255, 255, 255))]).pixel_values[0]
    pad = torch.tensor(PAD_COLOUR, dtype=torch.float32).view(3, 1) / 255
    # 100x50 sits in rows 25..74 of the 100x100 square; stay two rows clear of the edges.
    torch.testing.assert_close(out[:, :23].reshape(3, -1), pad.expand(3, 23 * 100))
    torch.testing.assert_close(out[:, 77:].reshape(3, -1), pad.expand(3, 23 * 100))
    assert torch.equal(out[:, 27:73], torch.ones(3, 46, 100))


def test_square_image_at_model_size_is_unchanged():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    pixels, geometry = ImageProcessor(48).process_one(Image.fromarray(array))
    assert geometry == PadGeometry(48, 48)
    assert torch.equal(pixels, torch.from_numpy(array).permute(2, 0, 1).float() / 255)


def test_half_pixel_padding_is_placed_exactly():
    # 60 wide, 101 tall: the square is 101, the image starts 20.5 px in. At 2x nearest, its
    # columns are exactly 41..160; padding to whole pixels would give 40..159.
    processor = ImageProcessor(202, resample=Image.Resampling.NEAREST)
    square, geometry = processor.pad_and_resize(Image.new("RGB", (60, 101), (255, 255, 255)))
    assert geometry.offset_x == 20.5
    white = np.asarray(square)[:, :, 0] == 255
    assert _mask_box(white) == (41, 0, 161, 202)


def test_stripe_centre_lands_where_the_box_frame_says_with_bicubic():
    # The background has the padding's colour, so only the stripe stands out; grey levels stay
    # clear of 0 and 255 so bicubic overshoot is not clipped.
    image = Image.new("RGB", (61, 100), PAD_COLOUR)
    ImageDraw.Draw(image).rectangle([20, 0, 30, 99], fill=(200, 200, 200))  # columns 20..30 inclusive
    size = 336
    pixels, geometry = ImageProcessor(size).process_one(image)
    profile = pixels[0, size // 2].double() - PAD_COLOUR[0] / 255
    centroid = float((profile * (torch.arange(size, dtype=torch.float64) + 0.5)).sum() / profile.sum())
    box = Box.from_pixels(20, 0, 31, 100, geometry.width, geometry.height)
    expected = (box.x1 + box.x2) / 2 * size
    assert abs(centroid - expected) < 0.05  # whole-pixel padding would be off by 1.65 px


@pytest.mark.parametrize(("size", "pixel_box"), [((60, 101), (13, 7, 41, 30)), ((157, 90), (100, 51, 150, 88))])
def test_boxes_round_trip_through_processed_pixels(size, pixel_box):
    """Box -> pixels of the padded, resized image -> Box, with the object really at those pixels."""
    image = Image.new("RGB", size, (40, 120, 40))
    x1, y1, x2, y2 = pixel_box
    ImageDraw.Draw(image).rectangle([x1, y1, x2 - 1, y2 - 1], fill=(230, 20, 20))
    s = 336
    processed = ImageProcessor(s)([image])
    geometry = processed.geometry[0]
    box = Box.from_pixels(*pixel_box, geometry.width, geometry.height)

    # Box -> processed pixels: the model-frame box scaled by S covers the drawn object.
    # Red minus green separates object (0.82), background (-0.31) and padding (0.02); cut halfway.
    pixels = processed.pixel_values[0]
    red = ((pixels[0] - pixels[1]) > 0.255).numpy()
    found = _mask_box(red)
    expected = [v * s for v in box.to_list()]
    assert np.allclose(found, expected, atol=0.6)  # each edge at the pixel whose centre it passes

    # Processed pixels -> Box: the object found on the processed image is the same box.
    back = Box(*(v / s for v in found))
    assert back.iou(box) > 0.97  # edges within half a pixel of the S x S image
    # ... and back to the original picture's pixels.
    assert np.allclose(back.to_pixels(geometry.width, geometry.height), pixel_box, atol=geometry.side / s)


def test_image_modes_are_converted_to_rgb():
    grey = Image.new("L", (20, 10), 200)
    rgba = Image.new("RGBA", (20, 10), (10, 20, 30, 128))
    out = ImageProcessor(16)([grey, rgba]).pixel_values
    centre = out[:, :, 8, 8]
    torch.testing.assert_close(centre[0], torch.full((3,), 200 / 255))
    torch.testing.assert_close(centre[1], torch.tensor([10, 20, 30]) / 255)


def test_normalise_per_tower_statistics():
    pixels = torch.rand(2, 3, 8, 8)
    processed = ImageProcessor(8)([Image.new("RGB", (8, 8))])
    for mean, std in ((CLIP_MEAN, CLIP_STD), (IMAGENET_MEAN, IMAGENET_STD)):
        manual = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        torch.testing.assert_close(normalise(pixels, mean, std), manual)
        torch.testing.assert_close(ImageProcessor.normalise(pixels, mean, std), manual)
    torch.testing.assert_close(
        processed.normalised(CLIP_MEAN, CLIP_STD), normalise(processed.pixel_values, CLIP_MEAN, CLIP_STD)
    )
    with pytest.raises(ImageInputError, match=r"\(\.\.\., 3, H, W\)"):
        normalise(torch.rand(4, 8, 8), CLIP_MEAN, CLIP_STD)


def test_bad_inputs_get_clear_errors():
    processor = ImageProcessor(16)
    with pytest.raises(ImageInputError, match="wrap a single image in a list"):
        processor(Image.new("RGB", (4, 4)))  # type: ignore[arg-type]
    with pytest.raises(ImageInputError, match="empty"):
        processor([])
    with pytest.raises(ImageInputError, match=r"image 1: .*PIL.Image.open"):
        processor([Image.new("RGB", (4, 4)), "cat.jpg"])  # type: ignore[list-item]
    with pytest.raises(ImageInputError, match="positive int"):
        ImageProcessor(0)
    with pytest.raises(ImageInputError, match="pad_colour"):
        ImageProcessor(16, pad_colour=(300, 0, 0))
