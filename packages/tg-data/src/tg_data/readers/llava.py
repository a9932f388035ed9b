"""LLaVA conversation JSON, both directions.

Upstream format (LLaVA-Pretrain 558k/595k, LLaVA-v1.5-mix665k, ShareGPT4V): one JSON array of
records ::

    [{"id": "000000033471",
      "image": "coco/train2017/000000033471.jpg",          # absent for text-only records
      "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                        {"from": "gpt", "value": "The bus is white and red."}]}, ...]

Roles are ``human`` and ``gpt`` (``system``, ``user`` and ``assistant`` are accepted too). Image
paths are relative to an image folder that the file does not name (``image_root``). A JSON Lines
file of the same records is read as well.

Lossless both ways for what LLaVA has: id (its JSON type too), image, the turns, and any other
top-level field (kept in ``meta["llava"]``). What LLaVA lacks (task, source, size, objects, meta) is
written under an extra ``"tg_data"`` key, which LLaVA's loaders ignore and this reader restores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from tg_data.io import SkipReport, atomic_open, handle_bad_record
from tg_data.jsonstream import iter_json_array, json_top_level_kind
from tg_data.readers._common import RECORD_ERRORS, convert_records, image_path, jsonl_records
from tg_data.schema import ObjectRef, Sample, SampleError, Task, Turn

ROLE_FROM_LLAVA = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
ROLE_TO_LLAVA = {"user": "human", "assistant": "gpt", "system": "system"}
EXTRA_KEY = "tg_data"
_LLAVA_KEYS = ("id", "image", "conversations", EXTRA_KEY)
DEFAULT_SOURCE = "llava"


def llava_record_to_sample(
    rec: Any, image_root: str | None = None, task: str = Task.VQA.value, source: str = DEFAULT_SOURCE
) -> Sample:
    """One LLaVA record as a ``Sample``; raises ``SampleError`` naming what is wrong."""
    if not isinstance(rec, dict):
        raise SampleError(f"a LLaVA record must be a JSON object, got {type(rec).__name__}")
    if rec.get("id") is None or rec.get("id") == "":
        raise SampleError("LLaVA record has no 'id'")
    sid = str(rec["id"])
    convs = rec.get("conversations")
    if not isinstance(convs, list):
        raise SampleError(f"sample {sid!r}: 'conversations' must be a list of {{from, value}}")
    turns = []
    for k, c in enumerate(convs):
        if not isinstance(c, dict) or "from" not in c or "value" not in c:
            raise SampleError(f"sample {sid!r}: conversation turn {k} needs 'from' and 'value'")
        role = ROLE_FROM_LLAVA.get(c["from"])
        if role is None:
            raise SampleError(
                f"sample {sid!r}: unknown role {c['from']!r} in conversation turn {k}; "
                f"LLaVA roles are 'human' and 'gpt' (also accepted: {sorted(set(ROLE_FROM_LLAVA) - {'human', 'gpt'})})"
            )
        if not isinstance(c["value"], str):
            raise SampleError(f"sample {sid!r}: conversation turn {k} 'value' must be a string")
        turns.append(Turn(role, c["value"]))
    image = rec.get("image")
    if isinstance(image, list):
        raise SampleError(f"sample {sid!r}: has {len(image)} images; multi-image records are not supported")
    if image is not None and not isinstance(image, str):
        raise SampleError(f"sample {sid!r}: 'image' must be a path string")
    extra = rec.get(EXTRA_KEY) or {}
    if not isinstance(extra, dict):
        raise SampleError(f"sample {sid!r}: '{EXTRA_KEY}' must be an object")
    meta = dict(extra.get("meta") or {})
    kept = {k: v for k, v in rec.items() if k not in _LLAVA_KEYS}
    if not isinstance(rec["id"], str):
        kept["id"] = rec["id"]
    if kept:
        meta["llava"] = kept
    return Sample(
        id=sid,
        turns=turns,
        image=image_path(image_root, image) if image else None,
        objects=[ObjectRef.from_dict(o) for o in extra.get("objects") or []],
        task=extra.get("task") or task,
        source=extra.get("source") or source,
        width=extra.get("width"),
        height=extra.get("height"),
        meta=meta,
    )


def sample_to_llava_record(sample: Sample, extras: bool = True) -> dict[str, Any]:
    """A ``Sample`` as a LLaVA record; tg-data fields go under ``"tg_data"`` when ``extras``."""
    meta = dict(sample.meta)
    kept = dict(meta.pop("llava", None) or {})
    rec: dict[str, Any] = {"id": kept.pop("id", sample.id)}
    if sample.image:
        rec["image"] = sample.image
    rec["conversations"] = [{"from": ROLE_TO_LLAVA[t.role], "value": t.text} for t in sample.turns]
    rec.update(kept)
    extra: dict[str, Any] = {}
    if sample.task != Task.VQA.value:
        extra["task"] = sample.task
    if sample.source != DEFAULT_SOURCE:
        extra["source"] = sample.source
    if sample.size is not None:
        extra["width"], extra["height"] = sample.size
    if sample.objects:
        extra["objects"] = [o.to_dict() for o in sample.objects]
    if meta:
        extra["meta"] = meta
    if extras and extra:
        rec[EXTRA_KEY] = extra
    elif sample.object_images:
        raise SampleError(
            f"sample {sample.id!r}: shows {len(sample.object_images)} object image(s) through <object>, "
            "which plain LLaVA JSON cannot carry; write it with the tg_data extras"
        )
    return rec


def read_llava_json(
    path: str,
    image_root: str | None = None,
    task: str = Task.VQA.value,
    source: str = DEFAULT_SOURCE,
    skip: SkipReport | None = None,
) -> Iterator[Sample]:
    """Samples from a LLaVA JSON array (streamed) or a JSON Lines file of LLaVA records."""
    if json_top_level_kind(path) == "object":
        records: Iterable[tuple[str, Any]] = jsonl_records(path)
    else:
        records = ((f"{path}: record {i} (line {line})", rec) for i, line, rec in iter_json_array(path))
    return convert_records(
        records, lambda rec: [llava_record_to_sample(rec, image_root, task, source)], skip
    )


def write_llava_json(
    samples: Iterable[Sample], path: str, extras: bool = True, skip: SkipReport | None = None
) -> int:
    """Write one LLaVA JSON array, streamed record by record; returns how many were written."""
    n = 0
    with atomic_open(path, "wt") as f:
        f.write("[")
        for s in samples:
            try:
                rec = sample_to_llava_record(s, extras)
            except RECORD_ERRORS as e:
                handle_bad_record(e, f"{path}: sample {s.id!r}", skip)
                continue
            f.write(("\n" if n == 0 else ",\n") + json.dumps(rec, ensure_ascii=False))
            n += 1
        f.write("\n]\n")
    return n
