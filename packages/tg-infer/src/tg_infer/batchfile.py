"""Answering a JSON Lines file of requests, resumably: finished ids are skipped on a rerun.

Input, one object per line::

    {"id": "q1", "prompt": "Output the coordinate of the red circle.", "image": "img/1.png",
     "objects": [{"box": [0.1, 0.2, 0.4, 0.5]}], "max_new_tokens": 48, "temperature": 0}

``prompt`` (or ``messages``: ``[{"role", "content"}, ...]``) may hold ``<image>`` and ``<object>``;
``image`` is relative to ``image_root`` (default: the input file's folder); ``objects`` are in the
project's form (boxes normalised to the padded square). Output, one line per answered id::

    {"id": "q1", "text": "...", "finish_reason": "stop", "boxes": [{"label", "coords", "box", "pixels"}]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tg_data.box import BoxError
from tg_data.schema import ObjectRef, SampleError, Show
from tg_infer.answers import find_boxes
from tg_infer.errors import InferError
from tg_infer.images import open_image
from tg_infer.predictor import Predictor
from tg_infer.requests import Request, Sampling, as_turns


@dataclass(frozen=True)
class BatchStats:
    total: int
    skipped: int
    answered: int
    recovered_partial_line: bool = False


@dataclass(frozen=True)
class _Item:
    id: str
    line: int
    record: dict[str, Any]


def _read_items(path: Path) -> list[_Item]:
    if not path.is_file():
        raise InferError(f"input file {path} does not exist")
    items: list[_Item] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InferError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix the line and rerun") from None
            if not isinstance(record, dict) or record.get("id") in (None, ""):
                raise InferError(f"{path}:{lineno}: expected an object with a non-empty 'id'")
            rid = str(record["id"])
            if rid in seen:
                raise InferError(f"{path}:{lineno}: id {rid!r} already used on line {seen[rid]}; ids must be unique")
            seen[rid] = lineno
            if not isinstance(record.get("prompt"), str) and not isinstance(record.get("messages"), list):
                raise InferError(f"{path}:{lineno}: id {rid!r} needs a 'prompt' string or a 'messages' list")
            items.append(_Item(rid, lineno, record))
    return items


def _done_ids(out: Path) -> tuple[set[str], bool]:
    """Ids already answered in ``out``; a last line cut off mid-write is dropped (and redone)."""
    if not out.exists():
        return set(), False
    data = out.read_bytes()
    recovered = False
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with out.open("r+b") as f:
            f.truncate(keep)
        data, recovered = data[:keep], True
    done = set()
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            done.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InferError(f"{out}:{lineno}: not an answer line; this output cannot be resumed (fix or move it)") from None
    return done, recovered


def _request(item: _Item, image_root: Path, default_max_new_tokens: int, where: str, load: bool = True) -> Request:
    """The item's request; with ``load=False`` the image is only checked to exist (a dry run)."""
    r = item.record
    try:
        turns = as_turns([{"role": "user", "content": r["prompt"]}] if "prompt" in r else r["messages"])
        image = None
        if r.get("image"):
            path = Path(r["image"])
            path = path if path.is_absolute() else image_root / path
            if not path.is_file():
                raise InferError(f"image {r['image']} not found under {image_root}; pass --image-root")
            image = open_image(path) if load else str(path)
        objects = tuple(
            o if o.show == Show.IMAGE.value else ObjectRef(o.box, Show.IMAGE.value, o.label, o.image, o.margin)
            for o in (ObjectRef.from_dict(d) for d in r.get("objects") or [])
        )
        sampling = Sampling(float(r.get("temperature", 0.0)), float(r.get("top_p", 1.0)), int(r.get("top_k", 0)),
                            r.get("seed"))
        return Request(turns, image, objects, int(r.get("max_new_tokens", default_max_new_tokens)), sampling,
                       id=item.id)
    except (InferError, SampleError, BoxError, TypeError, ValueError) as e:
        raise InferError(f"{where}: id {item.id!r}: {e}") from None


def _chunks(items: Sequence[_Item], size: int) -> Iterator[Sequence[_Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_batch(
    predictor: Predictor,
    input_path: str | Path,
    output_path: str | Path,
    image_root: str | Path | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    progress: bool = True,
) -> BatchStats:
    """Answer every request of ``input_path`` not yet in ``output_path``, appending one batch at a time."""
    if batch_size < 1:
        raise InferError(f"batch size must be at least 1, got {batch_size}")
    src, out = Path(input_path), Path(output_path)
    root = Path(image_root) if image_root is not None else src.parent
    items = _read_items(src)
    for item in items:  # every mistake is found before any work is done
        _request(item, root, max_new_tokens, f"{src}:{item.line}", load=False)
    done, recovered = _done_ids(out)
    todo = [i for i in items if i.id not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = task = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                       TimeRemainingColumn())
        bar.start()
        task = bar.add_task("answering", total=len(items), completed=len(items) - len(todo))
    try:
        with out.open("a", encoding="utf-8") as f:
            for chunk in _chunks(todo, batch_size):
                requests = [_request(i, root, max_new_tokens, f"{src}:{i.line}") for i in chunk]
                generations = predictor.generate(requests)
                for req, g in zip(requests, generations, strict=True):
                    img = req.image
                    boxes = find_boxes(g.text, img.width, img.height) if img is not None else []  # type: ignore[union-attr]
                    record = {"id": req.id, "text": g.text, "finish_reason": g.finish_reason,
                              "boxes": [b.to_dict() for b in boxes]}
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                if bar is not None:
                    bar.advance(task, len(chunk))  # type: ignore[arg-type]
    finally:
        if bar is not None:
            bar.stop()
    return BatchStats(len(items), len(items) - len(todo), len(todo), recovered)
