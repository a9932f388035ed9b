"""Writing a run's output: Parquet shards per stage, object-image crop specs, quarantine list, manifest.

Layout of OUT::

    manifest.json          what was made, from what, counts, filters, failures, cost, image root
    stage2/shard-*.parquet  tg-data samples for the stage-2 recipe
    stage3/shard-*.parquet  tg-data samples for the stage-3 recipe
    crops.jsonl            one line per distinct object image: image, box, margin, pixel crop box
    crops/*.png            the object images themselves, only with [output] save_crops = true
    quarantine.jsonl       every record that failed for good, with the step and the reason
    cache.sqlite           finished steps (the run resumes from it)
    log.jsonl              run events

Shards are written into a fresh ``<stage>.partial`` directory that replaces ``<stage>`` only when
complete, so a reader never sees a half-written stage and a killed run leaves no stray shards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from tg_data.box import Box
from tg_data.io import write_parquet
from tg_data.schema import Sample
from tg_synth.cache import stable_hash

FORMAT = "tg-synth/1"


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class ShardWriter:
    """Samples of one stage into ``dir/shard-NNNNN.parquet``, ``shard_rows`` rows per shard."""

    def __init__(self, out_dir: Path, name: str, shard_rows: int) -> None:
        self.final = out_dir / name
        self.partial = out_dir / f"{name}.partial"
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.shard_rows = shard_rows
        self.buffer: list[Sample] = []
        self.shards: list[str] = []
        self.count = 0
        self.tasks: Counter[str] = Counter()

    def add(self, sample: Sample) -> None:
        self.buffer.append(sample)
        self.count += 1
        self.tasks[sample.task] += 1
        if len(self.buffer) >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        name = f"shard-{len(self.shards):05d}.parquet"
        write_parquet(self.buffer, str(self.partial / name))
        self.shards.append(name)
        self.buffer.clear()

    def close(self) -> dict[str, Any]:
        if self.buffer or not self.shards:
            self._flush()
        shutil.rmtree(self.final, ignore_errors=True)
        os.replace(self.partial, self.final)
        return {"path": self.final.name, "shards": self.shards, "samples": self.count,
                "tasks": dict(sorted(self.tasks.items()))}


def crop_pixel_box(box: Box, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """The crop of an object image in original-image pixels: the box grown by ``margin`` per side, clipped."""
    x1, y1, x2, y2 = box.to_pixels(width, height)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    return (
        max(0, int(x1 - mx)),
        max(0, int(y1 - my)),
        min(width, math.ceil(x2 + mx)),
        min(height, math.ceil(y2 + my)),
    )


class CropWriter:
    """One spec line per distinct (image, box, margin); with ``save`` also the cropped PNG."""

    def __init__(self, out_dir: Path, save: bool) -> None:
        self.path = out_dir / "crops.jsonl"
        self.tmp = out_dir / "crops.jsonl.tmp"
        self.dir = out_dir / "crops"
        self.save = save
        if save:
            self.dir.mkdir(exist_ok=True)
        self.f = self.tmp.open("w", encoding="utf-8")
        self.seen: set[str] = set()

    def add_sample(self, sample: Sample, local_image: str) -> None:
        for obj in sample.object_images:
            margin = obj.margin or 0.0
            image = obj.image or sample.image
            crop_id = stable_hash([image, obj.box.to_list(), margin])[:20]
            if crop_id in self.seen:
                continue
            self.seen.add(crop_id)
            px = crop_pixel_box(obj.box, sample.width or 1, sample.height or 1, margin)
            spec: dict[str, Any] = {"id": crop_id, "image": image, "box": obj.box.to_list(), "margin": margin,
                                    "pixel_box": list(px), "label": obj.label}
            if self.save:
                from PIL import Image

                file = self.dir / f"{crop_id}.png"
                if not file.exists():
                    with Image.open(local_image) as im:
                        im.convert("RGB").crop(px).save(file)
                spec["file"] = f"crops/{file.name}"
            self.f.write(json.dumps(spec, ensure_ascii=False) + "\n")

    def close(self) -> dict[str, Any]:
        self.f.close()
        os.replace(self.tmp, self.path)
        return {"path": self.path.name, "count": len(self.seen), "saved": self.save}
