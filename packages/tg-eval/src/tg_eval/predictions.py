"""Prediction files: ``{id, text}`` records, read for scoring and appended to while a model runs.

A run appends one JSON line per finished item and flushes each batch to disk, so a run that stops
(a crash, a lost machine) resumes where it stopped: ids already in the file are skipped. Only a
last line cut off mid-write is dropped (it is regenerated); any other bad line is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tg_data.io import DataError
from tg_eval.records import first_field, read_records, record_id

ID_FIELDS: tuple[str, ...] = ("id", "question_id")
TEXT_FIELDS: tuple[str, ...] = ("text", "answer", "prediction")


@dataclass(frozen=True)
class Prediction:
    id: str
    text: str
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class PredictionSet:
    """Predictions by id; a repeated id keeps its first prediction and is counted."""

    by_id: dict[str, Prediction] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, key: str) -> Prediction | None:
        return self.by_id.get(key)

    def text(self, key: str) -> str | None:
        p = self.by_id.get(key)
        return None if p is None else p.text

    @classmethod
    def from_records(
        cls,
        records: Iterable[dict[str, Any]],
        source: str = "predictions",
        id_fields: Sequence[str] = ID_FIELDS,
        text_fields: Sequence[str] = TEXT_FIELDS,
    ) -> PredictionSet:
        out = cls(source=source)
        for n, rec in enumerate(records, 1):
            where = f"{source}: record {n}"
            key = record_id(first_field(rec, id_fields, where))
            text = first_field(rec, text_fields, where)
            if not isinstance(text, str):
                raise DataError(f"{where} (id {key}): the prediction text must be a string, got {type(text).__name__}")
            if key in out.by_id:
                out.duplicates.append(key)
                continue
            out.by_id[key] = Prediction(key, text, rec)
        return out


def read_predictions(
    path: str | Path,
    id_fields: Sequence[str] = ID_FIELDS,
    text_fields: Sequence[str] = TEXT_FIELDS,
) -> PredictionSet:
    """Predictions from JSON Lines or a JSON array: the id in ``id``/``question_id``, the text in
    ``text``/``answer``/``prediction`` (the first field present wins)."""
    return PredictionSet.from_records(read_records(path, "predictions"), str(path), id_fields, text_fields)


class PredictionLog:
    """An append-only JSON Lines file of finished items that a resumed run continues."""

    def __init__(self, path: str | Path, id_field: str = "id") -> None:
        self.path = Path(path)
        self.id_field = id_field
        self.recovered_partial_line = False
        self._done: set[str] = set()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A write cut off mid-line: keep every complete line, drop the fragment, regenerate it.
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as f:
                f.truncate(keep)
            data = data[:keep]
            self.recovered_partial_line = True
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{self.path}:{lineno}: malformed JSON ({e.msg}); this file cannot be resumed: "
                    "fix or delete that line"
                ) from None
            if not isinstance(rec, dict) or self.id_field not in rec:
                raise DataError(f"{self.path}:{lineno}: expected an object with {self.id_field!r}; cannot resume")
            self._done.add(record_id(rec[self.id_field]))

    @property
    def done(self) -> frozenset[str]:
        return frozenset(self._done)

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Append finished records and make them durable before returning."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for rec in records:
            key = record_id(rec[self.id_field])
            if key in self._done:
                raise DataError(f"{self.path}: id {key} is already recorded; a run must skip finished ids")
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())
        self._done.update(record_id(r[self.id_field]) for r in records)
