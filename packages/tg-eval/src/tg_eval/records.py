"""Reading the record files benchmarks come in: JSON, JSON Lines, Parquet and TSV.

Benchmarks ship their files in whatever form their authors chose (POPE's label files are JSON
Lines named ``.json``; MMBench is a TSV with base64 images), so one loader accepts them all and
names the file and line of anything it cannot read.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec

from tg_data.io import DataError


def _read_text(path: str | Path) -> str:
    try:
        with fsspec.open(str(path), "rt", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _json_lines(path: str | Path, text: str) -> list[Any]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    return out


def load_json_any(path: str | Path) -> Any:
    """A JSON document, or the list of a JSON Lines file's records (whatever the file is named)."""
    text = _read_text(path)
    if str(path).endswith((".jsonl", ".ndjson")):
        return _json_lines(path, text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON values: JSON Lines under a .json name (POPE does this)
            return _json_lines(path, text)
        raise DataError(f"{path}: malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def _read_tsv(path: str | Path, columns: Sequence[str] | None) -> list[dict[str, Any]]:
    csv.field_size_limit(sys.maxsize)  # MMBench rows carry base64 images
    reader = csv.DictReader(io.StringIO(_read_text(path)), delimiter="\t")
    keep = None if columns is None else set(columns)
    rows = []
    for row in reader:
        rows.append({k: v for k, v in row.items() if keep is None or k in keep})
    return rows


def _read_parquet(path: str | Path, columns: Sequence[str] | None) -> list[dict[str, Any]]:
    import polars as pl

    try:
        with fsspec.open(str(path), "rb") as f:
            keep = None
            if columns is not None:  # only the columns that exist: optional ones may be absent
                names = pl.read_parquet_schema(f).keys()
                keep = [c for c in columns if c in names]
                f.seek(0)
            frame = pl.read_parquet(f, columns=keep)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as e:  # polars raises several kinds for broken files and missing columns
        raise DataError(f"{path}: cannot read Parquet ({e})") from None
    return frame.to_dicts()


def read_records(path: str | Path, what: str, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The records of a file as dicts; ``what`` names the file's role in error messages.

    Accepts a JSON array of objects, JSON Lines (any name), Parquet and TSV. ``columns`` limits
    what is read from Parquet and TSV files (those present), so image payloads stay on disk.
    """
    p = str(path)
    if p.endswith(".parquet"):
        records: list[Any] = _read_parquet(path, columns)
    elif p.endswith((".tsv", ".tsv.gz")):
        records = _read_tsv(path, columns)
    else:
        data = load_json_any(path)
        if isinstance(data, dict):
            raise DataError(
                f"{path}: the {what} is one JSON object; expected a list of records (a JSON array or JSON Lines)"
            )
        records = data
    for n, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {n} of the {what} is {type(rec).__name__}, expected an object")
    return records


def require(record: dict[str, Any], field: str, where: str) -> Any:
    """``record[field]``, or a ``DataError`` that names the record and the missing field."""
    if field not in record or record[field] is None:
        keys = ", ".join(sorted(record)) or "none"
        raise DataError(f"{where}: missing field {field!r} (fields present: {keys})")
    return record[field]


def first_field(record: dict[str, Any], fields: Sequence[str], where: str) -> Any:
    """The value of the first of ``fields`` that the record has (files name the same thing differently)."""
    for f in fields:
        if record.get(f) is not None:
            return record[f]
    keys = ", ".join(sorted(record)) or "none"
    raise DataError(f"{where}: needs one of the fields {list(fields)} (fields present: {keys})")


def record_id(value: Any) -> str:
    """Ids compare as text: ``12`` in one file and ``"12"`` in another are the same question."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)
