"""LLaVA's captions-and-boxes file (``llava/eval/table/caps_boxes_coco2014_val_80.jsonl``).

Upstream format, JSON Lines, one COCO image per line::

    {"id": "000000296284", "image": "000000296284.jpg",
     "captions": ["A donut shop is full of different flavors of donuts.", ...],   # five
     "instances": [{"category": "donut", "bbox": [0.37, 0.584, 0.504, 0.709]}, ...]}

``bbox`` is ``[x1, y1, x2, y2]`` as fractions of the original (unpadded) image, three decimals, so
placing it in the padded square needs each image's size: from ``sizes`` (a COCO annotation file or
a ``{name: [w, h]}`` mapping) or the image files under ``image_root``. Without sizes, read the plain
records with ``read_caps_boxes_records``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tg_data.box import Box
from tg_data.io import DataError, SkipReport
from tg_data.prompts import CAPTION_PROMPT
from tg_data.readers._common import SizeLookup, convert_records, image_path, jsonl_records
from tg_data.schema import IMAGE_TOKEN, ObjectRef, Sample, Show, Task, Turn


@dataclass(frozen=True)
class Instance:
    category: str
    bbox: tuple[float, float, float, float]  # fractions of the original image


@dataclass(frozen=True)
class CapsBoxesRecord:
    id: str
    image: str
    captions: tuple[str, ...]
    instances: tuple[Instance, ...]


def _record(rec: object) -> CapsBoxesRecord:
    if not isinstance(rec, dict):
        raise ValueError(f"a caps/boxes record must be a JSON object, got {type(rec).__name__}")
    captions = rec["captions"]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError("'captions' must be a list of strings")
    instances = []
    for k, inst in enumerate(rec["instances"]):
        bbox = inst["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"instance {k}: 'bbox' must be [x1, y1, x2, y2], got {bbox!r}")
        instances.append(Instance(str(inst["category"]), tuple(float(v) for v in bbox)))  # type: ignore[arg-type]
    return CapsBoxesRecord(str(rec["id"]), str(rec["image"]), tuple(captions), tuple(instances))


def read_caps_boxes_records(path: str, skip: SkipReport | None = None) -> Iterator[CapsBoxesRecord]:
    """The plain records, boxes left as fractions of the original image."""
    return convert_records(jsonl_records(path), lambda rec: [_record(rec)], skip)


def read_caps_boxes(
    path: str,
    sizes: Mapping[str, tuple[int, int]] | str | None = None,
    image_root: str | None = None,
    skip: SkipReport | None = None,
) -> Iterator[Sample]:
    """One caption sample per caption; the image's instances ride along as text-shown objects."""
    if sizes is None and image_root is None:
        raise DataError(
            f"{path}: its boxes are fractions of each original image; pass sizes (a COCO annotation file "
            "or a {name: [w, h]} mapping) or image_root (the images) to place them in the padded square"
        )
    size_of = SizeLookup(sizes, image_root, "caps/boxes records")

    def convert(raw: object) -> list[Sample]:
        rec = _record(raw)
        width, height = size_of(rec.image)
        objects = [
            ObjectRef(Box.from_image_relative(*inst.bbox, width, height), Show.TEXT.value, label=inst.category)
            for inst in rec.instances
        ]
        return [
            Sample(
                id=f"caps-{rec.id}-{k}",
                image=image_path(image_root, rec.image),
                width=width,
                height=height,
                task=Task.CAPTION.value,
                source="llava-caps-boxes",
                objects=objects,
                turns=[Turn("user", f"{IMAGE_TOKEN}\n{CAPTION_PROMPT}"), Turn("assistant", caption.strip())],
                meta={"image_id": rec.id, "caption_index": k},
            )
            for k, caption in enumerate(rec.captions)
        ]

    return convert_records(jsonl_records(path), convert, skip)
