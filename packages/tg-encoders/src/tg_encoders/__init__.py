"""tg-encoders: Vision towers (CLIP via open_clip, DINOv2 via timm), multi-scale fusion, preprocessing and object crop-and-zoom."""

__version__ = "0.1.0"
