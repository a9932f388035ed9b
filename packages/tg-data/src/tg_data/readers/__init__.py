"""Readers of upstream dataset formats, all behind one call: ``read(format, path, **options)``.

Every reader takes the upstream file (or folder) as ``path`` and a ``skip`` report, streams
``Sample``s with boxes in the project's frame, and names the file and record of anything bad.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import fsspec

from tg_data.io import DataError, SkipReport, iter_jsonl_records, read_samples
from tg_data.jsonstream import iter_json_array, json_top_level_kind
from tg_data.readers._common import image_path
from tg_data.readers.caps_boxes import CapsBoxesRecord, read_caps_boxes, read_caps_boxes_records
from tg_data.readers.flickr30k import read_flickr30k_entities
from tg_data.readers.llava import read_llava_json, sample_to_llava_record, write_llava_json
from tg_data.readers.pope import POPE_CATEGORIES, PopeRecord, pope_object, read_pope, read_pope_records
from tg_data.readers.refcoco import UnsafePickleError, load_plain_pickle, read_refcoco
from tg_data.readers.visual_genome import read_visual_genome
from tg_data.schema import Sample


def read_tg(path: str, image_root: str | None = None, skip: SkipReport | None = None) -> Iterator[Sample]:
    """tg-data's own samples: ``.jsonl``, ``.parquet`` or a directory of Parquet shards; with
    ``image_root``, relative image paths (the sample's and its objects') are joined to it."""
    samples = read_samples(path, skip)
    if image_root is None:
        return samples
    return (_rooted(s, image_root) for s in samples)


def _rooted(sample: Sample, root: str) -> Sample:
    objects = [replace(o, image=image_path(root, o.image)) if o.image else o for o in sample.objects]
    return replace(sample, image=image_path(root, sample.image) if sample.image else None, objects=objects)


@dataclass(frozen=True)
class ReaderSpec:
    name: str
    read: Callable[..., Iterator[Sample]]
    description: str

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options this reader takes besides ``path`` and ``skip``."""
        params = inspect.signature(self.read).parameters
        return tuple(p for p in params if p not in ("path", "skip"))


READERS: dict[str, ReaderSpec] = {
    spec.name: spec
    for spec in (
        ReaderSpec("tg", read_tg, "tg-data samples (.jsonl, .parquet, or a folder of .parquet shards)"),
        ReaderSpec("llava", read_llava_json, "LLaVA conversation JSON (pretrain, mix665k, ShareGPT4V)"),
        ReaderSpec("refcoco", read_refcoco, "RefCOCO/RefCOCO+/RefCOCOg: refs(<split_by>).p + COCO instances.json"),
        ReaderSpec("vg", read_visual_genome, "Visual Genome region_descriptions.json"),
        ReaderSpec("flickr30k", read_flickr30k_entities, "Flickr30K Entities folder (Sentences/ + Annotations/)"),
        ReaderSpec("pope", read_pope, "POPE label files or LLaVA-style POPE question files"),
        ReaderSpec("caps-boxes", read_caps_boxes, "LLaVA captions+boxes JSON Lines (caps_boxes_coco2014_val_80)"),
    )
}


def read(fmt: str, path: str, skip: SkipReport | None = None, **options: Any) -> Iterator[Sample]:
    """Samples from ``path`` read as ``fmt`` (a key of ``READERS``); options it does not take are
    refused by name rather than ignored."""
    spec = READERS.get(fmt)
    if spec is None:
        raise DataError(f"unknown format {fmt!r}; known: {', '.join(READERS)}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise OptionError(fmt, unknown, spec.options)
    return spec.read(path, skip=skip, **options)


class OptionError(DataError):
    """Options that a format does not take; ``flag`` renders option names as the CLI spells them."""

    def __init__(self, fmt: str, unknown: list[str], takes: tuple[str, ...], flag: Callable[[str], str] = str):
        self.fmt, self.unknown, self.takes = fmt, unknown, takes
        super().__init__(
            f"format {fmt!r} does not take {', '.join(map(flag, unknown))} "
            f"(it takes: {', '.join(map(flag, takes)) or 'no options'})"
        )


_REFS = re.compile(r"refs\(\w+\)\.p$")


def detect_format(path: str) -> str:
    """The reader for ``path``, from its name, its folder layout or its first record."""
    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        raise DataError(f"{path}: no such file or folder")
    name = p.rstrip("/").rsplit("/", 1)[-1]
    if fs.isdir(p):
        entries = {e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(p, detail=False)}
        if {"Sentences", "Annotations"} <= entries:
            return "flickr30k"
        if any(_REFS.search(e) for e in entries):
            return "refcoco"
        if any(f.endswith(".parquet") for f in fs.find(p)):
            return "tg"
        raise DataError(f"{path}: cannot tell what this folder holds; pass the format ({', '.join(READERS)})")
    if _REFS.search(name):
        return "refcoco"
    if name.endswith(".parquet"):
        return "tg"
    if "region_descriptions" in name:
        return "vg"
    try:
        kind = json_top_level_kind(path)
        if kind == "array":
            first = next((rec for _, _, rec in iter_json_array(path)), None)
        elif kind == "object":
            first = next((rec for _, rec in iter_jsonl_records(path)), None)
        else:
            first = None
    except (DataError, UnicodeDecodeError):
        first = None
    keys = set(first) if isinstance(first, dict) else set()
    if "turns" in keys:
        return "tg"
    if "conversations" in keys:
        return "llava"
    if "regions" in keys:
        return "vg"
    if {"question_id", "image", "text"} <= keys:
        return "pope"
    if {"captions", "instances"} <= keys:
        return "caps-boxes"
    raise DataError(f"{path}: cannot tell its format from its name or first record; pass the format ({', '.join(READERS)})")


__all__ = [
    "POPE_CATEGORIES",
    "READERS",
    "CapsBoxesRecord",
    "OptionError",
    "PopeRecord",
    "ReaderSpec",
    "UnsafePickleError",
    "detect_format",
    "load_plain_pickle",
    "pope_object",
    "read",
    "read_caps_boxes",
    "read_caps_boxes_records",
    "read_flickr30k_entities",
    "read_llava_json",
    "read_pope",
    "read_pope_records",
    "read_refcoco",
    "read_tg",
    "read_visual_genome",
    "sample_to_llava_record",
    "write_llava_json",
]
