"""tg-encoders: vision towers (CLIP via open_clip, DINOv2 via timm), multi-scale fusion, preprocessing
and object crop-and-zoom.

open_clip and timm are imported only when a tower is built, so importing this package is cheap.
"""

from __future__ import annotations

from tg_encoders.crop import crop_and_zoom, crop_box_pixels
from tg_encoders.encoder import (
    ENCODERS,
    MultiScaleEncoder,
    build_encoder,
    encoder_specs,
    real_encoder_specs,
    tiny_encoder_specs,
)
from tg_encoders.errors import (
    CropError,
    EncoderError,
    GridMismatchError,
    ImageInputError,
    TowerSpecError,
    WeightsError,
)
from tg_encoders.features import FeatureFile, read_features, write_features
from tg_encoders.processing import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_COLOUR,
    ImageProcessor,
    ProcessedImages,
    normalise,
)
from tg_encoders.towers import (
    TOWERS,
    CLIPTower,
    DINOv2Tower,
    VisionTower,
    build_tower,
    count_parameters,
    save_tower_weights,
    tiny_clip_spec,
    tiny_dinov2_spec,
    tower_spec,
)

__version__ = "0.1.0"

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PAD_COLOUR",
    "TOWERS",
    "CLIPTower",
    "CropError",
    "DINOv2Tower",
    "EncoderError",
    "FeatureFile",
    "GridMismatchError",
    "ImageInputError",
    "ImageProcessor",
    "MultiScaleEncoder",
    "ProcessedImages",
    "TowerSpecError",
    "VisionTower",
    "WeightsError",
    "build_encoder",
    "build_tower",
    "count_parameters",
    "crop_and_zoom",
    "crop_box_pixels",
    "encoder_specs",
    "normalise",
    "read_features",
    "real_encoder_specs",
    "save_tower_weights",
    "tiny_clip_spec",
    "tiny_dinov2_spec",
    "tiny_encoder_specs",
    "tower_spec",
    "write_features",
]
