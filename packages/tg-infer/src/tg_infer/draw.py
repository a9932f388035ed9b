"""Drawing predicted boxes with their labels on the image, to see an answer at a glance."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from tg_data.draw import PALETTE
from tg_infer.answers import FoundBox

MIN_SIDE = 448  # small images are enlarged (nearest neighbour) so labels stay legible


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def enlargement(width: int, height: int, min_side: int = MIN_SIDE) -> int:
    """The whole factor that brings the longer side of a small picture to at least ``min_side``."""
    return max(1, -(-min_side // max(width, height)))


def draw_boxes(image: Image.Image, boxes: Sequence[FoundBox], min_side: int = MIN_SIDE) -> Image.Image:
    """A copy of ``image`` with each box outlined in its own colour and its label above it."""
    canvas = image.convert("RGB")
    width, height = canvas.size
    scale = enlargement(width, height, min_side)
    canvas = canvas.resize((width * scale, height * scale), Image.Resampling.NEAREST) if scale > 1 else canvas.copy()
    draw = ImageDraw.Draw(canvas)
    font = _font(max(12, min(28, canvas.width // 32)))
    line = max(2, canvas.width // 200)
    for k, found in enumerate(boxes):
        colour = PALETTE[k % len(PALETTE)]
        x1, y1, x2, y2 = (v * scale for v in found.pixels)
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=colour, width=line)
        label = f"{k + 1}: {found.label}" if found.label else f"{k + 1}"
        text_w = draw.textlength(label, font=font)
        bbox = draw.textbbox((0, 0), label, font=font)
        text_h = bbox[3] - bbox[1] + 4
        tx = min(max(0.0, x1), max(0.0, canvas.width - text_w - 4))
        ty = y1 - text_h if y1 >= text_h else min(y2 + 1, canvas.height - text_h)
        draw.rectangle((tx, ty, tx + text_w + 4, ty + text_h), fill=colour)
        draw.text((tx + 2, ty + 1 - bbox[1]), label, fill=(255, 255, 255), font=font)
    return canvas
