"""RefCOCO, RefCOCO+ and RefCOCOg (the ``refer`` toolkit's files).

Upstream layout (lichengunc/refer ``data/``)::

    refcoco/  refs(unc).p  refs(google).p  instances.json
    refcoco+/ refs(unc).p                  instances.json
    refcocog/ refs(umd).p  refs(google).p  instances.json

``refs(<split_by>).p`` is a pickle (written by Python 2, protocol 2) of a list of refs::

    {"ref_id": 0, "ann_id": 1719310, "image_id": 581857, "category_id": 1, "split": "train",
     "file_name": "COCO_train2014_000000581857_16.jpg", "sent_ids": [0, 1],
     "sentences": [{"sent_id": 0, "sent": "the lady with the blue shirt", "raw": "THE LADY ...",
                    "tokens": ["the", "lady", ...]}, ...]}

``instances.json`` is COCO's: ``images`` (id, file_name, width, height), ``annotations`` (id, image_id,
bbox as pixel ``[x, y, w, h]``, category_id) and ``categories`` (id, name). Splits are ``train``,
``val``, ``testA``, ``testB`` (unc), ``test`` (umd); every sample keeps its split in ``meta``.

The pickle is loaded by an unpickler that builds plain containers, strings and numbers only: a
pickle that asks to import anything (the way pickles run code) is refused before it can.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec

from tg_data.coords import render_box
from tg_data.io import DataError, SkipReport
from tg_data.prompts import REC_PROMPT, REG_PROMPT
from tg_data.readers._common import convert_records, image_path, load_json, pixel_box
from tg_data.schema import IMAGE_TOKEN, ObjectRef, Sample, Show, Task, Turn

SPLIT_BYS = ("unc", "umd", "google")
_REFS_NAME = re.compile(r"refs\((\w+)\)\.p$")


class UnsafePickleError(DataError):
    """A pickle that tries to import a callable: it could run code, so it is not loaded."""


_ALLOWED_GLOBALS: dict[tuple[str, str], type] = {
    (module, name): kind
    for module in ("builtins", "__builtin__")
    for name, kind in (("set", set), ("frozenset", frozenset))
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(f"{module}.{name}")
        return allowed


def load_plain_pickle(path: str) -> Any:
    """Unpickle ``path`` allowing only lists, dicts, tuples, sets, strings, bytes and numbers."""
    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    last: Exception | None = None
    for encoding in ("utf-8", "latin1"):  # Python 2 byte strings: UTF-8 when they are, else Latin-1
        try:
            return _PlainUnpickler(io.BytesIO(data), encoding=encoding).load()
        except UnsafePickleError as e:
            raise UnsafePickleError(
                f"{path}: refusing to load this pickle: it asks to import {e}, and a pickle that imports "
                "can run code. A refs file holds only lists, dicts, strings and numbers, so this one is "
                "not a genuine refs file; get it again from the dataset's source"
            ) from None
        except UnicodeDecodeError as e:
            last = e
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError, TypeError) as e:
            raise DataError(f"{path}: not a readable pickle ({e})") from None
    raise DataError(f"{path}: strings in the pickle cannot be decoded ({last})")


def _locate(path: str, split_by: str | None, instances: str | None) -> tuple[str, str, str, str]:
    """``(refs_file, instances_file, dataset, split_by)`` from a refs file or a dataset directory."""
    fs, p = fsspec.core.url_to_fs(path)
    if fs.isdir(p):
        root = path.rstrip("/")
        found = sorted(m.group(1) for f in fs.ls(p, detail=False) if (m := _REFS_NAME.search(f)))
        if split_by is None:
            if len(found) != 1:
                raise DataError(
                    f"{path}: {'several refs files ' + str(found) if found else 'no refs(<split_by>).p file'}; "
                    f"pass split_by (one of {list(SPLIT_BYS)})"
                )
            split_by = found[0]
        refs = f"{root}/refs({split_by}).p"
    else:
        refs = path
        m = _REFS_NAME.search(path)
        split_by = split_by or (m.group(1) if m else "unknown")
        root = path.rsplit("/", 1)[0] if "/" in path else "."
    instances = instances or f"{root}/instances.json"
    dataset = root.rstrip("/").rsplit("/", 1)[-1] or "refcoco"
    return refs, instances, dataset, split_by


def read_refcoco(
    path: str,
    instances: str | None = None,
    split_by: str | None = None,
    splits: Iterable[str] | None = None,
    image_root: str | None = None,
    task: str = Task.REC.value,
    dataset: str | None = None,
    skip: SkipReport | None = None,
) -> Iterator[Sample]:
    """One sample per referring expression (sentence) of the chosen ``splits`` (default: all).

    ``path`` is a dataset directory (``refcoco/``) or its ``refs(<split_by>).p``; ``instances``
    defaults to the ``instances.json`` beside it. ``task`` is ``rec`` (expression -> coordinates) or
    ``reg`` (coordinates -> expression).
    """
    if task not in (Task.REC.value, Task.REG.value):
        raise DataError(f"refcoco: task must be 'rec' or 'reg', got {task!r}")
    refs_file, instances_file, found_dataset, split_by = _locate(path, split_by, instances)
    dataset = dataset or found_dataset
    refs = load_plain_pickle(refs_file)
    if not isinstance(refs, list):
        raise DataError(f"{refs_file}: expected a list of refs, got {type(refs).__name__}")
    coco = load_json(instances_file)
    try:
        images = {im["id"]: im for im in coco["images"]}
        anns = {a["id"]: a for a in coco["annotations"]}
        categories = {c["id"]: c["name"] for c in coco.get("categories", [])}
    except (KeyError, TypeError) as e:
        raise DataError(f"{instances_file}: not COCO instances (images/annotations with ids): {e}") from None
    wanted = set(splits) if splits is not None else None
    if wanted is not None:
        present = {r.get("split") for r in refs if isinstance(r, dict)}
        unknown = wanted - present
        if unknown:
            raise DataError(f"{refs_file}: no refs in split(s) {sorted(unknown)}; the file has {sorted(present)}")

    def convert(ref: dict[str, Any]) -> list[Sample]:
        if wanted is not None and ref["split"] not in wanted:
            return []
        ann = anns.get(ref["ann_id"])
        if ann is None:
            raise ValueError(f"annotation {ref['ann_id']} is not in {instances_file}")
        im = images.get(ann["image_id"])
        if im is None:
            raise ValueError(f"image {ann['image_id']} is not in {instances_file}")
        width, height = int(im["width"]), int(im["height"])
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = pixel_box(x, y, x + w, y + h, width, height)
        coord = render_box(box)
        out = []
        for sent in ref["sentences"]:
            text = str(sent["sent"]).strip()
            if not text:
                raise ValueError(f"sentence {sent.get('sent_id')} is empty")
            if task == Task.REC.value:
                turns = [Turn("user", f"{IMAGE_TOKEN}\n{REC_PROMPT.format(expression=text)}"), Turn("assistant", coord)]
            else:
                turns = [Turn("user", f"{IMAGE_TOKEN}\n{REG_PROMPT.format(coord=coord)}"), Turn("assistant", text)]
            out.append(
                Sample(
                    id=f"{dataset}-{split_by}-{ref['ref_id']}-{sent['sent_id']}",
                    image=image_path(image_root, im["file_name"]),
                    width=width,
                    height=height,
                    task=task,
                    source=dataset,
                    objects=[ObjectRef(box, Show.COORD.value, label=text)],
                    turns=turns,
                    meta={
                        "dataset": dataset,
                        "split_by": split_by,
                        "split": ref["split"],
                        "ref_id": ref["ref_id"],
                        "ann_id": ref["ann_id"],
                        "sent_id": sent["sent_id"],
                        "image_id": ann["image_id"],
                        "category": categories.get(ann.get("category_id")),
                        "bbox_xywh": [x, y, w, h],
                        "raw": sent.get("raw"),
                    },
                )
            )
        return out

    records = ((f"{refs_file}: ref {r.get('ref_id', i) if isinstance(r, dict) else i}", r) for i, r in enumerate(refs))
    return convert_records(records, convert, skip)
