"""From tg-data samples to model inputs: token ids, labels, image and object-image pixels, batches."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import fsspec
import torch
from PIL import Image, UnidentifiedImageError
from transformers import PreTrainedTokenizerBase

from tg_data.io import resolve
from tg_data.schema import Sample, Turn
from tg_encoders.crop import crop_and_zoom
from tg_encoders.feature_cache import TensorLRU
from tg_encoders.processing import ImageProcessor
from tg_model.configuration import TinyGroundingGPTConfig
from tg_model.template import IGNORE_INDEX, ChatTemplate, EncodedText, SampleRefused


@dataclass
class EncodedSample:
    id: str
    input_ids: torch.Tensor  # (L,) long
    labels: torch.Tensor  # (L,) long, IGNORE_INDEX outside assistant turns
    pixel_values: torch.Tensor | None  # (3, S, S) in [0, 1], or None without an image
    object_pixel_values: torch.Tensor | None  # (k, 3, S, S), or None without object images

    @property
    def length(self) -> int:
        return int(self.input_ids.numel())


def load_image(uri: str, sample_id: str = "?") -> Image.Image:
    """Decode an image from any fsspec URI; a missing or broken file is refused with its reason."""
    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read()
    except (FileNotFoundError, IsADirectoryError):
        raise SampleRefused(sample_id, "missing_image", f"image {uri} does not exist") from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as e:
        raise SampleRefused(sample_id, "broken_image", f"image {uri} cannot be decoded ({e})") from None
    return image.convert("RGB")


class SampleEncoder:
    """Turns a ``Sample`` into an ``EncodedSample`` for a given model config and tokenizer."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        config: TinyGroundingGPTConfig,
        image_size: int,
        image_tokens: int,
        image_root: str | None = None,
        max_length: int | None = None,
        image_cache_mb: float = 0.0,
    ) -> None:
        self.config = config
        self.image_root = image_root
        self.processor = ImageProcessor(image_size)
        # processed pixels by file, for data read many times over (each DataLoader worker keeps its own)
        self.pixel_cache = TensorLRU(int(image_cache_mb * 2**20)) if image_cache_mb > 0 else None
        self.template = ChatTemplate(
            tokenizer,
            image_token_id=config.image_token_id,
            object_token_id=config.object_token_id,
            image_tokens=image_tokens,
            object_tokens=config.object_grid**2,
            system_prompt=config.system_prompt,
            max_length=max_length or config.context_length,
            image_placement=config.image_placement,
        )

    def _file_pixels(self, uri: str, sample_id: str) -> tuple[torch.Tensor, Image.Image | None]:
        """A file's processed pixels; from the cache when it holds them (then nothing is decoded)."""
        if self.pixel_cache is not None:
            hit = self.pixel_cache.get(uri)
            if hit is not None:
                return hit, None
        image = load_image(uri, sample_id)
        pixels = self.processor.process_one(image)[0]
        if self.pixel_cache is not None:
            self.pixel_cache.put(uri, pixels)
        return pixels, image

    def encode_text(self, sample: Sample, for_generation: bool = False) -> EncodedText:
        """The sample's token ids and labels, as ``encode`` makes them."""
        turns: Sequence[Turn] = sample.turns
        if for_generation and turns and turns[-1].role == "assistant":
            turns = turns[:-1]
        return self.template.encode(turns, sample.id, add_generation_prompt=for_generation)

    def encode(
        self,
        sample: Sample,
        image: Image.Image | None = None,
        for_generation: bool = False,
        text: EncodedText | None = None,
    ) -> EncodedSample:
        """Training form by default; ``for_generation`` drops a final assistant turn and adds its header.

        ``text``: this sample's tokens from an earlier ``encode_text`` (in the same form), for data read
        many times over: the template and tokenizer are then skipped.
        """
        if text is None:
            text = self.encode_text(sample, for_generation)
        pixel_values = None
        given_image = image is not None
        uri = resolve(self.image_root, sample.image) if sample.image else None
        if uri is not None:
            if image is not None:
                pixel_values = self.processor.process_one(image)[0]
            else:
                pixel_values, image = self._file_pixels(uri, sample.id)
        crops = []
        for obj in sample.object_images:
            margin = self.config.object_margin if obj.margin is None else obj.margin
            source_uri = uri if obj.image is None else resolve(self.image_root, obj.image)
            # a crop read from a file is cached like the file's pixels (not one cut from a caller's image)
            cacheable = self.pixel_cache is not None and not (obj.image is None and given_image)
            key = (source_uri, obj.box, margin) if cacheable else None
            crop = self.pixel_cache.get(key) if key is not None else None
            if crop is None:
                # pixels came from the cache, and a crop needs the image (a Sample with crops always has one)
                if obj.image is None and image is None:
                    image = load_image(uri, sample.id)
                source = image if obj.image is None else load_image(source_uri, sample.id)
                crop = self.processor.process_one(crop_and_zoom(source, obj.box, margin))[0]
                if key is not None:
                    self.pixel_cache.put(key, crop)
            crops.append(crop)
        return EncodedSample(
            id=sample.id,
            input_ids=torch.tensor(text.input_ids, dtype=torch.long),
            labels=torch.tensor(text.labels, dtype=torch.long),
            pixel_values=pixel_values,
            object_pixel_values=torch.stack(crops) if crops else None,
        )


def collate(batch: Sequence[EncodedSample], pad_token_id: int, padding_side: str = "right") -> dict:
    """Pad a batch; images and object images are stacked in sample order (the order the model fills)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    length = max(s.length for s in batch)
    n = len(batch)
    input_ids = torch.full((n, length), pad_token_id, dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    for row, s in enumerate(batch):
        span = slice(length - s.length, length) if padding_side == "left" else slice(0, s.length)
        input_ids[row, span] = s.input_ids
        labels[row, span] = s.labels
        attention_mask[row, span] = 1
    images = [s.pixel_values for s in batch if s.pixel_values is not None]
    objects = [s.object_pixel_values for s in batch if s.object_pixel_values is not None]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "pixel_values": torch.stack(images) if images else None,
        "object_pixel_values": torch.cat(objects) if objects else None,
        "sample_ids": [s.id for s in batch],
    }
