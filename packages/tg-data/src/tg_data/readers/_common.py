"""Helpers every reader shares: where a record's image is, pixel boxes with annotation slack,
image sizes, and turning one bad record into an error or a counted skip."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import fsspec
from PIL import Image, UnidentifiedImageError

from tg_data.box import Box, BoxError
from tg_data.io import DataError, SkipReport, handle_bad_record, resolve
from tg_data.schema import SampleError

T = TypeVar("T")
R = TypeVar("R")

# Upstream annotations are often rounded a pixel past the image edge; that much is clipped.
OVERHANG_PX = 1.0
# What a record's conversion may raise when the record itself is wrong.
RECORD_ERRORS: tuple[type[Exception], ...] = (SampleError, BoxError, KeyError, TypeError, ValueError, IndexError)


def image_path(image_root: str | None, image: str) -> str:
    """``image`` under ``image_root`` (unchanged when absolute, a URI, or no root is given)."""
    return resolve(image_root, image)


def pixel_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> Box:
    """A pixel box of a ``width`` x ``height`` image; up to ``OVERHANG_PX`` past the edge is clipped,
    more is an error (the box does not belong to this image)."""
    for name, v, hi in (("x1", x1, width), ("y1", y1, height), ("x2", x2, width), ("y2", y2, height)):
        if v < -OVERHANG_PX or v > hi + OVERHANG_PX:
            raise BoxError(
                f"pixel box [{x1}, {y1}, {x2}, {y2}]: {name}={v} lies outside the {width}x{height} image"
            )
    return Box.from_pixels(x1, y1, x2, y2, width, height, clip=True)


def convert_records(
    records: Iterable[tuple[str, T]],
    convert: Callable[[T], Iterable[R]],
    skip: SkipReport | None,
) -> Iterator[R]:
    """Apply ``convert`` to each ``(where, record)``; a bad record raises ``DataError`` naming
    ``where``, or is counted in ``skip`` when the caller chose to skip. A record that is already an
    exception (a line that was not even JSON) counts as bad without conversion."""
    for where, record in records:
        if isinstance(record, Exception):
            handle_bad_record(record, where, skip)
            continue
        try:
            out = list(convert(record))
        except RECORD_ERRORS as e:
            handle_bad_record(_describe(e), where, skip)
            continue
        yield from out


def _describe(e: Exception) -> Exception:
    if isinstance(e, KeyError):
        return ValueError(f"missing field {e.args[0]!r}")
    return e


def jsonl_records(path: str) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for each non-empty line of a JSON Lines file; a line that is not JSON
    comes as a ``ValueError`` record, so that it can be skipped like any other bad record."""
    try:
        f = fsspec.open(path, "rt", encoding="utf-8", compression="infer").open()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                yield f"{path}:{lineno}", ValueError(f"malformed JSON ({e.msg} at column {e.colno})")


def load_json(path: str) -> Any:
    """A whole JSON file (for annotation files that are needed whole, such as COCO instances)."""
    try:
        with fsspec.open(path, "rt", encoding="utf-8", compression="infer") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None


def load_image_sizes(path: str) -> dict[str, tuple[int, int]]:
    """Image sizes by file name, from a COCO instances/captions file (``images`` with ``file_name``,
    ``width``, ``height``) or a plain ``{"name.jpg": [width, height]}`` mapping."""
    data = load_json(path)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        try:
            return {im["file_name"]: (int(im["width"]), int(im["height"])) for im in data["images"]}
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: a COCO 'images' entry lacks file_name/width/height ({e})") from None
    if isinstance(data, dict):
        try:
            return {str(k): (int(v[0]), int(v[1])) for k, v in data.items()}
        except (TypeError, ValueError, IndexError):
            pass
    raise DataError(
        f"{path}: not an image-size file; expected COCO annotations with 'images' "
        'or a mapping {"name.jpg": [width, height]}'
    )


def image_size_from_file(path: str) -> tuple[int, int]:
    """``(width, height)`` from the image's header (the pixels are not decoded)."""
    try:
        with fsspec.open(path, "rb") as f, Image.open(f) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"image {path} not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"image {path} cannot be read ({e})") from None


class SizeLookup:
    """Image sizes from a mapping first, else from the image files under ``image_root``."""

    def __init__(self, sizes: Mapping[str, tuple[int, int]] | str | None, image_root: str | None, what: str):
        self.sizes = load_image_sizes(sizes) if isinstance(sizes, str) else dict(sizes or {})
        self.image_root = image_root
        self.what = what
        self.from_files: dict[str, tuple[int, int]] = {}

    def __call__(self, image: str) -> tuple[int, int]:
        size = self.sizes.get(image) or self.sizes.get(image.rsplit("/", 1)[-1])
        if size is not None:
            return size
        if self.image_root is not None:
            if image not in self.from_files:
                self.from_files[image] = image_size_from_file(image_path(self.image_root, image))
            return self.from_files[image]
        raise ValueError(
            f"no size known for image {image!r}: {self.what} need the image sizes to place boxes in the "
            "padded square; pass sizes (a COCO annotation file or a {name: [w, h]} mapping) or image_root"
        )
