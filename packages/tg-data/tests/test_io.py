from __future__ import annotations

import gzip
import json
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import polars as pl
import pytest

import tg_data.io as io_mod
from tg_data.io import (
    DataError,
    SkipReport,
    read_jsonl,
    read_parquet,
    read_samples,
    write_jsonl,
    write_parquet,
    write_samples,
)
from tg_data.schema import Sample


def _samples(factory: Callable[..., Sample], n: int) -> list[Sample]:
    return [factory(f"s{k}", meta={"k": k}) for k in range(n)]


def _uri(kind: str, tmp_path: Path, name: str) -> str:
    if kind == "local":
        return str(tmp_path / name)
    if kind == "file":
        return f"file://{tmp_path / name}"
    return f"memory://tgdata-{uuid.uuid4().hex}/{name}"


@pytest.mark.parametrize("kind", ["local", "file", "memory"])
@pytest.mark.parametrize("name", ["data.jsonl", "data.parquet", "shards"])
def test_write_then_read_on_every_filesystem(
    kind: str, name: str, tmp_path: Path, sample_factory: Callable[..., Sample]
) -> None:
    samples = _samples(sample_factory, 25)
    uri = _uri(kind, tmp_path, name)
    n = write_samples(samples, uri, shard_rows=10 if name == "shards" else None)
    assert n == 25
    assert list(read_samples(uri)) == samples
    if name == "shards":
        fs, p = fsspec.core.url_to_fs(uri)
        assert sorted(f.rsplit("/", 1)[-1] for f in fs.ls(p, detail=False)) == [
            "shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet",
        ]


def test_empty_outputs_still_have_the_schema(tmp_path: Path) -> None:
    assert write_parquet([], str(tmp_path / "e.parquet")) == 0
    frame = pl.read_parquet(tmp_path / "e.parquet")
    assert frame.height == 0 and frame.columns == list(io_mod.PARQUET_SCHEMA)
    assert list(read_samples(str(tmp_path / "e.parquet"))) == []


def test_gzipped_jsonl_is_read(tmp_path: Path, sample_factory: Callable[..., Sample]) -> None:
    samples = _samples(sample_factory, 3)
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for s in samples:
            f.write(json.dumps(s.to_dict()) + "\n")
    assert list(read_samples(str(path))) == samples
    written = f"memory://tgdata-{uuid.uuid4().hex}/out.jsonl.gz"
    assert write_samples(samples, written) == 3
    with fsspec.open(written, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # really gzip
    assert list(read_samples(written)) == samples


def test_writes_are_atomic(tmp_path: Path, sample_factory: Callable[..., Sample]) -> None:
    target = tmp_path / "out.parquet"
    write_parquet(_samples(sample_factory, 2), str(target))

    def failing() -> Iterator[Sample]:
        yield sample_factory("ok")
        raise DataError("upstream.json:7: broken record")

    with pytest.raises(DataError, match=r"upstream\.json:7"):
        write_parquet(failing(), str(target))
    # the earlier file is intact and no temporary file is left behind
    assert [s.id for s in read_samples(str(target))] == ["s0", "s1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
    with pytest.raises(DataError):
        write_jsonl(failing(), str(tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists()


# bad records --------------------------------------------------------------------------------------
BAD_LINES = {
    "malformed JSON": ('{"id": "x", "turns": [', "malformed JSON"),
    "inverted box": ("inverted", "inverted or empty"),
    "NaN box": ("nan", "finite"),
    "unknown role": ("role", "unknown role 'robot'"),
    "image count": ("image", "<image> placeholder"),
    "object count": ("object", "<object> placeholder"),
}


def _bad_line(kind: str, factory: Callable[..., Sample]) -> str:
    d = factory("bad").to_dict()
    if kind == "inverted":
        d["objects"][0]["box"] = [0.6, 0.2, 0.1, 0.6]
    elif kind == "nan":
        d["objects"][0]["box"] = [0.1, float("nan"), 0.5, 0.6]
    elif kind == "role":
        d["turns"][0]["role"] = "robot"
    elif kind == "image":
        d["turns"][0]["text"] = d["turns"][0]["text"].replace("<image>", "")
    elif kind == "object":
        d["turns"][0]["text"] += " <object>"
    else:
        return kind
    return json.dumps(d)


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_jsonl_line_is_named_or_counted(case: str, tmp_path: Path, sample_factory: Callable[..., Sample]) -> None:
    payload, message = BAD_LINES[case]
    good = [json.dumps(s.to_dict()) for s in _samples(sample_factory, 3)]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([good[0], good[1], _bad_line(payload, sample_factory), good[2]]) + "\n")
    with pytest.raises(DataError) as e:
        list(read_jsonl(str(path)))
    assert f"{path}:3" in str(e.value) and message in str(e.value)
    skip = SkipReport()
    assert [s.id for s in read_jsonl(str(path), skip)] == ["s0", "s1", "s2"]
    assert skip.total == 1
    (reason,) = skip.reasons
    assert message in reason and skip.examples[reason] == [f"{path}:3"]


def test_skip_report_groups_reasons_without_values(tmp_path: Path, sample_factory: Callable[..., Sample]) -> None:
    lines = []
    for k, box in enumerate([[0.6, 0.2, 0.1, 0.6], [0.9, 0.9, 0.2, 0.95], [0.3, 0.3, 0.2, 0.4]]):
        d = sample_factory(f"b{k}").to_dict()
        d["objects"][0]["box"] = box
        lines.append(json.dumps(d))
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines))
    skip = SkipReport()
    assert list(read_jsonl(str(path), skip)) == []
    assert skip.total == 3 and len(skip.reasons) == 1  # one reason, three records
    assert "3 record(s) skipped" in skip.summary()


def test_a_bad_parquet_row_is_named(tmp_path: Path, sample_factory: Callable[..., Sample]) -> None:
    rows = [s.to_dict() for s in _samples(sample_factory, 3)]
    rows[1]["objects"][0]["box"] = [0.6, 0.2, 0.1, 0.6]
    path = tmp_path / "d.parquet"
    pl.DataFrame(rows, schema=io_mod.PARQUET_SCHEMA).write_parquet(path)
    with pytest.raises(DataError, match=r"d\.parquet: row 1: sample 's1'"):
        list(read_parquet(str(path)))
    skip = SkipReport()
    assert [s.id for s in read_parquet(str(path), skip)] == ["s0", "s2"] and skip.total == 1


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_task_filter_reads_only_those_tasks_and_still_names_the_file_row(
    tmp_path: Path, sample_factory: Callable[..., Sample], suffix: str
) -> None:
    rows = [s.to_dict() for s in _samples(sample_factory, 6)]
    for k, r in enumerate(rows):
        r["task"] = "rec" if k % 2 else "caption"
    rows[3]["objects"][0]["box"] = [0.6, 0.2, 0.1, 0.6]  # an inverted box in a rec row
    path = tmp_path / f"d{suffix}"
    if suffix == ".parquet":
        pl.DataFrame(rows, schema=io_mod.PARQUET_SCHEMA).write_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows))
    assert [s.id for s in read_samples(str(path), tasks={"caption"})] == ["s0", "s2", "s4"]
    where = r"d\.parquet: row 3" if suffix == ".parquet" else r"d\.jsonl:4"
    with pytest.raises(DataError, match=where):
        list(read_samples(str(path), tasks={"rec"}))
    skip = SkipReport()
    assert [s.id for s in read_samples(str(path), skip, tasks={"rec", "caption"})] == ["s0", "s1", "s2", "s4", "s5"]
    assert skip.total == 1


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "no such file"),
        ("missing.parquet", None, "no such file"),
        ("broken.parquet", b"not parquet at all", "not a readable Parquet file"),
        ("data.csv", b"a,b\n", "unknown sample format"),
    ],
)
def test_file_level_errors(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        list(read_samples(str(path)))


def test_empty_shard_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "x.parquet.txt").write_text("")
    with pytest.raises(DataError, match=r"no \.parquet files"):
        list(read_parquet(str(tmp_path / "shards")))


# streaming ----------------------------------------------------------------------------------------
def _peak_python_bytes(fn: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _drain(it: Iterator[Sample]) -> None:
    for _ in it:
        pass


def test_jsonl_reading_memory_does_not_grow_with_the_file(tmp_path: Path, sample_factory: Callable[..., Sample]) -> None:
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_jsonl(_samples(sample_factory, 300), str(small))
    write_jsonl(_samples(sample_factory, 2400), str(large))
    assert large.stat().st_size > 7 * small.stat().st_size
    peak_small = _peak_python_bytes(lambda: _drain(read_jsonl(str(small))))
    peak_large = _peak_python_bytes(lambda: _drain(read_jsonl(str(large))))
    assert peak_large < 1.5 * peak_small + 64_000
    assert peak_large < large.stat().st_size / 4  # nowhere near the whole file


def test_parquet_reading_holds_one_bounded_batch(
    tmp_path: Path, sample_factory: Callable[..., Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "d.parquet")
    write_parquet(_samples(sample_factory, 1000), path)
    seen: list[int] = []
    real = io_mod._parquet_batches

    def spy(file: str, batch_rows: int, tasks: object = None) -> Iterator[pl.DataFrame]:
        for frame in real(file, batch_rows, tasks):
            seen.append(frame.height)
            yield frame

    monkeypatch.setattr(io_mod, "_parquet_batches", spy)
    it = read_parquet(path, batch_rows=100)
    next(it)
    assert seen == [100]  # the first sample came after reading one batch, not the file
    assert sum(1 for _ in it) == 999
    assert max(seen) <= 100 and sum(seen) == 1000


def test_parquet_reading_python_memory_is_flat(tmp_path: Path, sample_factory: Callable[..., Sample]) -> None:
    small, large = str(tmp_path / "small.parquet"), str(tmp_path / "large.parquet")
    write_parquet(_samples(sample_factory, 300), small)
    write_parquet(_samples(sample_factory, 2400), large)
    peak_small = _peak_python_bytes(lambda: _drain(read_parquet(small, batch_rows=100)))
    peak_large = _peak_python_bytes(lambda: _drain(read_parquet(large, batch_rows=100)))
    assert peak_large < 1.5 * peak_small + 64_000


def test_parquet_writing_memory_does_not_grow_with_the_data(
    tmp_path: Path, sample_factory: Callable[..., Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(io_mod, "WRITE_BATCH_ROWS", 200)
    template = sample_factory("t")

    def generate(n: int) -> Iterator[Sample]:
        for k in range(n):
            yield Sample(id=f"s{k}", turns=template.turns, image=template.image, objects=template.objects,
                         width=64, height=48, meta={"k": k})

    peak_small = _peak_python_bytes(lambda: write_parquet(generate(400), str(tmp_path / "a.parquet")))
    peak_large = _peak_python_bytes(lambda: write_parquet(generate(3200), str(tmp_path / "b.parquet")))
    assert peak_large < 1.5 * peak_small + 64_000
    assert sum(1 for _ in read_parquet(str(tmp_path / "b.parquet"))) == 3200
