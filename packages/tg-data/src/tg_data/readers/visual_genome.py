"""Visual Genome region descriptions.

Upstream format (VG v1.2 ``region_descriptions.json``, ~700 MB, streamed here): a JSON array with
one entry per image ::

    [{"id": 1,
      "regions": [{"region_id": 1382, "image_id": 1, "phrase": "the clock is green in colour",
                   "x": 421, "y": 57, "width": 82, "height": 139}, ...]}, ...]

Boxes are pixel ``x, y, width, height``. Image sizes and paths come from ``image_data.json``
(``[{"image_id": 1, "width": 800, "height": 600, "url": ".../VG_100K_2/1.jpg", ...}]``; v1.0 names
the id ``id``), or from the image files under ``image_root`` (``<image_id>.jpg``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tg_data.coords import render_box
from tg_data.io import DataError, SkipReport
from tg_data.jsonstream import iter_json_array
from tg_data.prompts import REC_PROMPT, REG_PROMPT
from tg_data.readers._common import (
    SizeLookup,
    convert_records,
    image_path,
    load_json,
    pixel_box,
)
from tg_data.schema import IMAGE_TOKEN, ObjectRef, Sample, Show, Task, Turn


def _image_table(image_data: str) -> dict[int, tuple[str, int, int]]:
    """image id -> (relative path such as ``VG_100K_2/1.jpg``, width, height)."""
    table = {}
    data = load_json(image_data)
    if not isinstance(data, list):
        raise DataError(f"{image_data}: expected a JSON array of images")
    for k, im in enumerate(data):
        try:
            iid = int(im["image_id"] if "image_id" in im else im["id"])
            url = str(im.get("url") or f"{iid}.jpg")
            rel = "/".join(url.rstrip("/").split("/")[-2:]) if "/" in url else url
            table[iid] = (rel, int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{image_data}: entry {k} lacks image_id/width/height ({e})") from None
    return table


def read_visual_genome(
    path: str,
    image_data: str | None = None,
    image_root: str | None = None,
    task: str = Task.REC.value,
    skip: SkipReport | None = None,
) -> Iterator[Sample]:
    """One sample per region: ``rec`` (phrase -> coordinates) or ``reg`` (coordinates -> phrase)."""
    if task not in (Task.REC.value, Task.REG.value):
        raise DataError(f"visual genome: task must be 'rec' or 'reg', got {task!r}")
    if image_data is None and image_root is None:
        raise DataError(
            f"{path}: Visual Genome boxes are pixels; pass image_data (image_data.json) or image_root "
            "(the images) so their sizes are known"
        )
    table = _image_table(image_data) if image_data is not None else None
    size_of = SizeLookup(None, image_root, "Visual Genome regions")

    def locate(iid: int) -> tuple[str, int, int]:
        if table is not None:
            if iid not in table:
                raise ValueError(f"image {iid} is not in {image_data}")
            rel, w, h = table[iid]
            return image_path(image_root, rel), w, h
        w, h = size_of(f"{iid}.jpg")
        return image_path(image_root, f"{iid}.jpg"), w, h

    def convert(item: tuple[int, Any]) -> list[Sample]:
        iid, r = item
        img, width, height = locate(iid)
        phrase = " ".join(str(r["phrase"]).split())
        if not phrase:
            raise ValueError("the region has an empty phrase")
        x, y, w, h = (float(r[k]) for k in ("x", "y", "width", "height"))
        box = pixel_box(x, y, x + w, y + h, width, height)
        coord = render_box(box)
        if task == Task.REC.value:
            turns = [Turn("user", f"{IMAGE_TOKEN}\n{REC_PROMPT.format(expression=phrase)}"), Turn("assistant", coord)]
        else:
            turns = [Turn("user", f"{IMAGE_TOKEN}\n{REG_PROMPT.format(coord=coord)}"), Turn("assistant", phrase)]
        return [
            Sample(
                id=f"vg-{iid}-{r['region_id']}",
                image=img,
                width=width,
                height=height,
                task=task,
                source="vg",
                objects=[ObjectRef(box, Show.COORD.value, label=phrase)],
                turns=turns,
                meta={"image_id": iid, "region_id": r["region_id"], "xywh": [x, y, w, h]},
            )
        ]

    return convert_records(_regions(path), convert, skip)


def _regions(path: str) -> Iterator[tuple[str, Any]]:
    """``(where, (image_id, region))`` per region, so one bad region costs only itself; a malformed
    image entry comes as ``(where, ValueError)``."""
    for i, line, entry in iter_json_array(path):
        where = f"{path}: image entry {i} (line {line})"
        iid = entry.get("id", entry.get("image_id")) if isinstance(entry, dict) else None
        regions = entry.get("regions") if isinstance(entry, dict) else None
        if not isinstance(iid, int) or not isinstance(regions, list):
            yield where, ValueError("an image entry needs an integer 'id' and a 'regions' list")
            continue
        for k, r in enumerate(regions):
            rid = r.get("region_id", k) if isinstance(r, dict) else k
            yield f"{path}: image {iid}, region {rid} (line {line})", (iid, r)
