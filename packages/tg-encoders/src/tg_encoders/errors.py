"""The errors a user of tg-encoders can cause, each with a message that says how to fix it."""

from __future__ import annotations


class EncoderError(ValueError):
    """Base class: bad specs, weights, images or boxes given to tg-encoders."""


class TowerSpecError(EncoderError):
    """A tower spec that names an unknown type, model or field, or holds an impossible value."""


class WeightsError(EncoderError):
    """A checkpoint that is missing, unreadable, or does not fit the tower's architecture."""


class GridMismatchError(EncoderError):
    """Towers whose patch grids or input sizes cannot be fused patch by patch."""


class CropError(EncoderError):
    """A box that does not lie on the image it is cropped from."""


class ImageInputError(EncoderError):
    """Something passed as an image that is not a decodable picture of the expected shape."""
