"""Object images: the region of a box cut from the original picture, with a little context.

Boxes arrive in the project's frame (normalised to the padded square), are mapped back to the
original pixels, grown by a margin relative to the box size (context helps to tell an object from
its look-alikes), clipped to the picture and cut out. ``ImageProcessor`` then pads the cut to a
square and zooms it to the tower size.
"""

from __future__ import annotations

import math

from PIL import Image

from tg_data.box import Box
from tg_encoders.errors import CropError

# Pixel coordinates this close to a whole number are taken as that number (float noise from the
# normalised frame must not add a stray row or column).
_SNAP = 1e-4


def _snap(value: float) -> float:
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < _SNAP else value


def crop_box_pixels(
    box: Box, width: int, height: int, margin: float = 0.1
) -> tuple[int, int, int, int]:
    """Whole-pixel ``(left, top, right, bottom)`` of the object image in a ``width`` x ``height`` picture.

    The region covers the box grown by ``margin`` times its width (left and right) and height (top
    and bottom), clipped to the picture, and is never smaller than one pixel.
    """
    if not isinstance(box, Box):
        raise CropError(
            f"expected a tg_data.box.Box, got {type(box).__name__}; build one with Box(...) or "
            "Box.from_pixels(..., width, height)"
        )
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise CropError(f"margin must be a finite number >= 0 (a fraction of the box size), got {margin!r}")
    x1, y1, x2, y2 = box.to_pixels(width, height)
    grow_x, grow_y = margin * (x2 - x1), margin * (y2 - y1)
    x1, x2 = max(0.0, x1 - grow_x), min(float(width), x2 + grow_x)
    y1, y2 = max(0.0, y1 - grow_y), min(float(height), y2 + grow_y)
    if x1 >= x2 or y1 >= y2:
        raise CropError(
            f"box {[round(v, 4) for v in box.to_list()]} lies in the padding of this {width}x{height} "
            "image, not on it: boxes are normalised to the padded square of the image they were made "
            "for; is the box from another image?"
        )
    left, top = math.floor(_snap(x1)), math.floor(_snap(y1))
    right, bottom = math.ceil(_snap(x2)), math.ceil(_snap(y2))
    # A box thinner than a pixel still gets the pixel it lies on.
    if right <= left:
        right = min(width, left + 1)
        left = right - 1
    if bottom <= top:
        bottom = min(height, top + 1)
        top = bottom - 1
    return left, top, right, bottom


def crop_and_zoom(image: Image.Image, box: Box, margin: float = 0.1) -> Image.Image:
    """The object image for ``box`` (in the padded-square frame of ``image``), ready for the processor."""
    if not isinstance(image, Image.Image):
        raise CropError(f"expected a PIL.Image.Image to crop from, got {type(image).__name__}")
    return image.crop(crop_box_pixels(box, image.width, image.height, margin))
