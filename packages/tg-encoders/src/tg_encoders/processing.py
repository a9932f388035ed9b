"""Turn decoded images into the padded-square pixel tensors every tower reads.

One image is padded to a square around its centre and resized once; the result stays in [0, 1]
and un-normalised, so a single tensor feeds towers that each normalise with their own mean and
std. The padding is placed with sub-pixel accuracy (the same centred square that
``tg_data.box.PadGeometry`` describes), so boxes in the project's frame land exactly on the pixels
the model sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from tg_data.box import PadGeometry
from tg_encoders.errors import ImageInputError

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Truncated like LLaVA's expand2square, so padded pixels match data prepared with it.
PAD_COLOUR: tuple[int, int, int] = tuple(int(c * 255) for c in CLIP_MEAN)  # type: ignore[assignment]


def normalise(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``(pixels - mean) / std`` per channel, for ``(..., 3, H, W)`` tensors in [0, 1]."""
    if pixels.ndim < 3 or pixels.shape[-3] != 3:
        raise ImageInputError(f"normalise expects (..., 3, H, W) pixels, got shape {tuple(pixels.shape)}")
    m = torch.as_tensor(mean, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    return (pixels - m) / s


@dataclass
class ProcessedImages:
    """A batch ready for the encoder, with where each original image sits in its square."""

    pixel_values: torch.Tensor  # (B, 3, S, S) float32 in [0, 1]
    geometry: list[PadGeometry]

    def __len__(self) -> int:
        return len(self.geometry)

    def normalised(self, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        return normalise(self.pixel_values, mean, std)


def _as_rgb(image: object, where: str) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise ImageInputError(
            f"{where}: expected a PIL.Image.Image, got {type(image).__name__}; "
            "open files first, e.g. PIL.Image.open(path)"
        )
    if image.width <= 0 or image.height <= 0:
        raise ImageInputError(f"{where}: image has no pixels ({image.width}x{image.height})")
    return image if image.mode == "RGB" else image.convert("RGB")


class ImageProcessor:
    """Pad to a centred square with ``pad_colour``, then resize to ``image_size`` x ``image_size``."""

    def __init__(
        self,
        image_size: int,
        pad_colour: Sequence[int] = PAD_COLOUR,
        resample: Image.Resampling = Image.Resampling.BICUBIC,
    ) -> None:
        if not isinstance(image_size, int) or image_size <= 0:
            raise ImageInputError(f"image_size must be a positive int, got {image_size!r}")
        colour = tuple(int(c) for c in pad_colour)
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise ImageInputError(f"pad_colour must be three ints in 0..255, got {tuple(pad_colour)}")
        self.image_size = image_size
        self.pad_colour: tuple[int, int, int] = colour  # type: ignore[assignment]
        self.resample = resample

    def __repr__(self) -> str:
        return f"ImageProcessor(image_size={self.image_size}, pad_colour={self.pad_colour})"

    normalise = staticmethod(normalise)

    def pad_and_resize(self, image: Image.Image) -> tuple[Image.Image, PadGeometry]:
        """The square ``image_size`` picture the towers see, as a PIL image."""
        image = _as_rgb(image, "ImageProcessor")
        geometry = PadGeometry(image.width, image.height)
        side = geometry.side
        # Paste at whole pixels, then resample from the exact (possibly half-pixel) square.
        paste_x, paste_y = math.ceil(geometry.offset_x), math.ceil(geometry.offset_y)
        shift_x, shift_y = paste_x - geometry.offset_x, paste_y - geometry.offset_y
        canvas_w = side + (1 if shift_x else 0)
        canvas_h = side + (1 if shift_y else 0)
        if (canvas_w, canvas_h) == image.size:
            canvas = image
        else:
            canvas = Image.new("RGB", (canvas_w, canvas_h), self.pad_colour)
            canvas.paste(image, (paste_x, paste_y))
        square = (shift_x, shift_y, shift_x + side, shift_y + side)
        out = canvas.resize((self.image_size, self.image_size), self.resample, box=square)
        return out, geometry

    def process_one(self, image: Image.Image) -> tuple[torch.Tensor, PadGeometry]:
        """One image as a ``(3, S, S)`` float32 tensor in [0, 1] plus its padding geometry."""
        square, geometry = self.pad_and_resize(image)
        array = np.asarray(square, dtype=np.uint8)
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)
        return pixels, geometry

    def __call__(self, images: Sequence[Image.Image]) -> ProcessedImages:
        if isinstance(images, Image.Image):
            raise ImageInputError("ImageProcessor takes a sequence of images; wrap a single image in a list")
        if len(images) == 0:
            raise ImageInputError("ImageProcessor got an empty list of images")
        tensors: list[torch.Tensor] = []
        geometry: list[PadGeometry] = []
        for i, image in enumerate(images):
            try:
                pixels, geo = self.process_one(image)
            except ImageInputError as e:
                raise ImageInputError(f"image {i}: {e}") from None
            tensors.append(pixels)
            geometry.append(geo)
        return ProcessedImages(pixel_values=torch.stack(tensors), geometry=geometry)
