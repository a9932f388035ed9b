"""Streaming readers and writers for samples: JSON Lines and Parquet, on any fsspec URI.

Readers yield one ``Sample`` at a time, so memory does not grow with the file. A bad record raises
``DataError`` naming the file and line (or row); with a ``SkipReport`` it is counted by reason
and skipped instead, never dropped silently.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
from polars.io.plugins import register_io_source

from tg_data.schema import Sample, SampleError

PARQUET_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "image": pl.String,
    "width": pl.Int32,
    "height": pl.Int32,
    "task": pl.String,
    "source": pl.String,
    "objects": pl.List(
        pl.Struct(
            {
                "box": pl.List(pl.Float64),
                "show": pl.String,
                "label": pl.String,
                "image": pl.String,
                "margin": pl.Float64,
            }
        )
    ),
    "turns": pl.List(pl.Struct({"role": pl.String, "text": pl.String})),
    "meta": pl.String,
}


class DataError(ValueError):
    """A record or file that cannot be read; the message names where and what to fix."""


@dataclass
class SkipReport:
    """Counts of records skipped by reason, with the first few locations of each."""

    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, where: str) -> None:
        self.reasons[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples:
            ex.append(where)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        if not self.total:
            return "no records skipped"
        lines = [f"{self.total} record(s) skipped:"]
        for reason, n in self.reasons.most_common():
            lines.append(f"  {n:>7}  {reason}  (e.g. {', '.join(self.examples.get(reason, []))})")
        return "\n".join(lines)


_VALUES = re.compile(r"\[[^\[\]]*\]")


def _reason_of(err: Exception) -> str:
    """A short reason key for counting: the message without the record's id or its values, so
    that every inverted box (say) counts under one reason."""
    msg = str(err)
    if msg.startswith("sample ") and ": " in msg:
        msg = msg.split(": ", 1)[1]
    return _VALUES.sub("[...]", msg.split(";")[0])[:120]


def handle_bad_record(err: Exception, where: str, skip: SkipReport | None) -> None:
    """Raise a ``DataError`` naming ``where``, or count it when the caller chose to skip."""
    if skip is None:
        raise DataError(f"{where}: {err} (fix the record, or pass --skip-invalid to count and skip it)") from None
    skip.add(_reason_of(err), where)


def is_parquet(path: str) -> bool:
    p = str(path).rstrip("/")
    return p.endswith(".parquet") or _is_dir(p)


def _is_dir(path: str) -> bool:
    fs, p = fsspec.core.url_to_fs(path)
    return fs.isdir(p)


def _parquet_files(path: str) -> list[str]:
    fs, p = fsspec.core.url_to_fs(path)
    if fs.isdir(p):
        files = sorted(f for f in fs.find(p) if f.endswith(".parquet"))
        if not files:
            raise DataError(f"{path}: directory holds no .parquet files")
        return [fs.unstrip_protocol(f) for f in files]
    if not fs.exists(p):
        raise DataError(f"{path}: no such file")
    return [path]


# JSON Lines ---------------------------------------------------------------------------------------
def iter_jsonl_records(path: str) -> Iterator[tuple[int, Any]]:
    """``(line_number, parsed_json)`` for each non-empty line; malformed JSON raises ``DataError``."""
    try:
        f = fsspec.open(path, "rt", encoding="utf-8", compression="infer").open()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None


def read_jsonl(
    path: str, skip: SkipReport | None = None, tasks: Collection[str] | None = None
) -> Iterator[Sample]:
    """Samples from a JSON Lines file, one per line; only those of ``tasks`` when given."""
    try:
        f = fsspec.open(path, "rt", encoding="utf-8", compression="infer").open()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
                if tasks and isinstance(record, dict) and record.get("task") not in tasks:
                    continue
                yield Sample.from_dict(record)
            except json.JSONDecodeError as e:
                handle_bad_record(ValueError(f"malformed JSON ({e.msg} at column {e.colno})"), where, skip)
            except SampleError as e:
                handle_bad_record(e, where, skip)


def write_jsonl(samples: Iterable[Sample], path: str) -> int:
    """Write samples as JSON Lines (atomically on local disks); returns how many."""
    n = 0
    with _atomic_open(path, "wt") as f:
        for s in samples:
            f.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


# Parquet ------------------------------------------------------------------------------------------
WRITE_BATCH_ROWS = 4096


ROW_INDEX = "__row__"


def _parquet_batches(file: str, batch_rows: int, tasks: Collection[str] | None = None) -> Iterator[pl.DataFrame]:
    """Frames of at most ``batch_rows`` rows; local files are scanned in place, never loaded whole.

    Each frame carries the file's row number (``ROW_INDEX``); the task filter runs inside polars,
    so rows of other tasks are never turned into Python objects.
    """

    def scan(source: Any) -> Iterator[pl.DataFrame]:
        frame = pl.scan_parquet(source).with_row_index(ROW_INDEX)
        if tasks:
            frame = frame.filter(pl.col("task").is_in(sorted(tasks)))
        yield from frame.collect_batches(chunk_size=batch_rows)

    local = local_path(file)
    try:
        if local is not None:
            yield from scan(local)
            return
        fs, p = fsspec.core.url_to_fs(file)
        with fs.open(p, "rb") as f:
            yield from scan(f)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"{file}: not a readable Parquet file ({e})") from None


def read_parquet(
    path: str, skip: SkipReport | None = None, batch_rows: int = 1024, tasks: Collection[str] | None = None
) -> Iterator[Sample]:
    """Samples from a Parquet file or a directory of shards, ``batch_rows`` rows in memory at a time.

    ``tasks``: only samples of these tasks (filtered before any row becomes a ``Sample``).
    """
    for file in _parquet_files(path):
        for batch in _parquet_batches(file, batch_rows, tasks):
            for rec in batch.iter_rows(named=True):
                where = f"{file}: row {rec.pop(ROW_INDEX)}"
                try:
                    yield Sample.from_dict(rec)
                except SampleError as e:
                    handle_bad_record(e, where, skip)


def samples_to_frame(samples: Iterable[Sample]) -> pl.DataFrame:
    return pl.DataFrame([s.to_dict() for s in samples], schema=PARQUET_SCHEMA)


def _frames(samples: Iterable[Sample], rows: int) -> Iterator[pl.DataFrame]:
    buf: list[dict[str, Any]] = []
    for s in samples:
        buf.append(s.to_dict())
        if len(buf) >= rows:
            yield pl.DataFrame(buf, schema=PARQUET_SCHEMA)
            buf = []
    if buf:
        yield pl.DataFrame(buf, schema=PARQUET_SCHEMA)


def _stream_parquet(samples: Iterable[Sample], path: str) -> int:
    """One Parquet file written batch by batch through polars' streaming sink."""
    written = 0
    failure: list[BaseException] = []
    started = False

    def source(with_columns: Any, predicate: Any, n_rows: Any, batch_size: Any) -> Iterator[pl.DataFrame]:
        nonlocal written, started
        if started:  # the samples are an iterator: they can be consumed once only
            raise RuntimeError("the Parquet sink asked for the samples twice")
        started = True
        try:
            for frame in _frames(samples, WRITE_BATCH_ROWS):
                written += frame.height
                yield frame
        except BaseException as e:  # re-raised below with its own type and message
            failure.append(e)

    with _atomic_open(path, "wb") as f:
        register_io_source(source, schema=PARQUET_SCHEMA).sink_parquet(f)
        if failure:
            raise failure[0]
    return written


def write_parquet(samples: Iterable[Sample], path: str, shard_rows: int | None = None) -> int:
    """Write samples to one Parquet file, or with ``shard_rows`` to a directory of numbered shards.

    Streams: a few thousand rows (or one shard) are held in memory at a time, whatever the total.
    """
    if shard_rows is None:
        return _stream_parquet(samples, path)
    if shard_rows <= 0:
        raise ValueError(f"shard_rows must be positive, got {shard_rows}")
    fs, root = fsspec.core.url_to_fs(path)
    fs.makedirs(root, exist_ok=True)
    n, shard, buf = 0, 0, []

    def flush() -> None:
        nonlocal shard
        with _atomic_open(_join(path, f"shard-{shard:05d}.parquet"), "wb") as f:
            samples_to_frame(buf).write_parquet(f)
        shard += 1
        buf.clear()

    for s in samples:
        buf.append(s)
        n += 1
        if len(buf) >= shard_rows:
            flush()
    if buf or shard == 0:
        flush()
    return n


# dispatch -----------------------------------------------------------------------------------------
def read_samples(
    path: str, skip: SkipReport | None = None, tasks: Collection[str] | None = None
) -> Iterator[Sample]:
    """Read tg-data samples from ``.jsonl`` / ``.json`` lines, ``.parquet``, or a shard directory.

    ``tasks``: only samples of these tasks.
    """
    p = str(path)
    if p.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return read_jsonl(p, skip, tasks)
    if is_parquet(p):
        return read_parquet(p, skip, tasks=tasks)
    raise DataError(
        f"{path}: unknown sample format; expected .jsonl, .parquet or a directory of .parquet shards "
        "(convert other formats with `tg-data convert`)"
    )


def write_samples(samples: Iterable[Sample], path: str, shard_rows: int | None = None) -> int:
    p = str(path)
    if p.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return write_jsonl(samples, p)
    if p.endswith(".parquet") and shard_rows is None:
        return write_parquet(samples, p)
    return write_parquet(samples, p, shard_rows=shard_rows or 50_000)


# helpers ------------------------------------------------------------------------------------------
def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


class _atomic_open:
    """Write to ``path.tmp`` then rename, so a crash never leaves a half-written file behind."""

    def __init__(self, path: str, mode: str) -> None:
        self.path = str(path)
        self.mode = mode
        self.fs, self.target = fsspec.core.url_to_fs(self.path)
        self.tmp = self.target + ".tmp"
        parent = self.fs._parent(self.target)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)

    def __enter__(self):
        if self.target.endswith(".gz"):  # compressed on the way out, as readers decompress on the way in
            raw = self.fs.open(self.tmp, "wb")
            gz = gzip.GzipFile(fileobj=raw, mode="wb")
            self.f = io.TextIOWrapper(gz, encoding="utf-8") if "t" in self.mode else gz
            self.handles = [self.f, raw]
        else:
            kwargs = {"encoding": "utf-8"} if "t" in self.mode else {}
            self.f = self.fs.open(self.tmp, self.mode, **kwargs)
            self.handles = [self.f]
        return self.f

    def __exit__(self, exc_type, exc, tb) -> None:
        for h in self.handles:
            h.close()
        if exc_type is not None:
            self.fs.rm(self.tmp)
            return
        if self.fs.exists(self.target):
            self.fs.rm(self.target)
        self.fs.mv(self.tmp, self.target)


atomic_open = _atomic_open


def local_path(uri: str) -> Path | None:
    """The local filesystem path of ``uri`` when it has one (plain path or ``file://``)."""
    fs, p = fsspec.core.url_to_fs(uri)
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return Path(p) if proto in ("file", "local") else None


def resolve(root: str | None, path: str) -> str:
    """``path`` as given when absolute or a URI, else joined to ``root``."""
    if root is None or "://" in path or path.startswith("/"):
        return path
    return _join(str(root), path)
