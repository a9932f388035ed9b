"""Drawing a sample's boxes and labels on its image, to see with one's own eyes that data is right."""

from __future__ import annotations

import fsspec
from PIL import Image, ImageDraw, ImageFont

from tg_data.io import DataError
from tg_data.schema import Sample, Show

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40)]
MIN_SIDE = 448  # small images are enlarged (nearest neighbour) so labels stay legible
_SHOW_TAG = {Show.IMAGE.value: " [object image]", Show.COORD.value: "", Show.TEXT.value: " [text]"}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _resolve(root: str | None, path: str) -> str:
    if root is None or "://" in path or path.startswith("/"):
        return path
    return f"{root.rstrip('/')}/{path}"


def draw_sample(sample: Sample, image_root: str | None = None) -> Image.Image:
    """The sample's image with each object's box and label, and its turns written underneath."""
    if not sample.image:
        raise DataError(f"sample {sample.id!r} has no image to draw on")
    uri = _resolve(image_root, sample.image)
    try:
        with fsspec.open(uri, "rb") as f, Image.open(f) as im:
            image = im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"sample {sample.id!r}: image {uri} not found") from None
    width, height = image.size
    scale = max(1, -(-MIN_SIDE // max(width, height)))
    if scale > 1:
        image = image.resize((width * scale, height * scale), Image.Resampling.NEAREST)
    font = _font(14)
    draw = ImageDraw.Draw(image)
    for k, obj in enumerate(sample.objects):
        colour = PALETTE[k % len(PALETTE)]
        x1, y1, x2, y2 = (v * scale for v in obj.box.to_pixels(width, height))
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=2)
        label = f"{k}: {obj.label or ''}{_SHOW_TAG.get(obj.show, '')}".strip()
        tx = min(max(0.0, x1), max(0.0, image.width - draw.textlength(label, font=font) - 2))
        ty = y1 - 18 if y1 >= 18 else min(y2 + 2, image.height - 18)
        bbox = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle(bbox, fill=colour)
        draw.text((tx, ty), label, fill=(255, 255, 255), font=font)
    return _with_caption(image, sample, font)


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, max_px: float) -> list[str]:
    """Greedy word wrap measured in pixels of ``font``."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if line and measure(candidate, font=font) > max_px:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line]


def _with_caption(image: Image.Image, sample: Sample, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    max_px = image.width - 8
    lines = _wrap(f"{sample.id}  task={sample.task}  source={sample.source}", font, max_px)
    for t in sample.turns:
        wrapped = _wrap(f"{t.role}: {t.text.replace(chr(10), ' ')}", font, max_px)
        lines += wrapped[:4] + (["  ..."] if len(wrapped) > 4 else [])
    lines = lines[:24]
    line_h = 18
    canvas = Image.new("RGB", (image.width, image.height + line_h * len(lines) + 8), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, image.height + 4 + i * line_h), line, fill=(0, 0, 0), font=font)
    return canvas
