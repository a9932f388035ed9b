from __future__ import annotations

import json
import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from tg_data.io import DataError, SkipReport, read_samples
from tg_data.readers import read_llava_json, sample_to_llava_record, write_llava_json
from tg_data.schema import Sample, SampleError


def test_reads_the_upstream_records(upstream: Callable) -> None:
    up = upstream("llava")
    samples = list(read_llava_json(str(up.path), image_root="/data/llava"))
    assert [s.id for s in samples] == ["000000033471", "4539375", "sharegpt-text-only"]
    first = samples[0]
    assert first.image == "/data/llava/coco/train2017/000000033471.jpg"
    assert [t.role for t in first.turns] == ["user", "assistant", "user", "assistant"]
    assert first.turns[1].text == "The bus in the image is white and red."
    assert first.task == "vqa" and first.source == "llava"
    assert samples[1].turns[0].text.endswith("<image>")  # the pretrain set puts the token last
    assert samples[1].meta["llava"] == {"id": 4539375, "model": ""}
    text_only = samples[2]
    assert text_only.image is None and [t.role for t in text_only.turns] == ["system", "user", "assistant"]


def test_llava_to_tg_to_llava_is_lossless(upstream: Callable, tmp_path: Path) -> None:
    up = upstream("llava")
    out = tmp_path / "back.json"
    n = write_llava_json(read_llava_json(str(up.path)), str(out))
    assert n == 3
    assert json.loads(out.read_text()) == up.truth["records"]


def test_llava_through_parquet_and_back_is_lossless(upstream: Callable, tmp_path: Path) -> None:
    from tg_data.io import write_samples

    up = upstream("llava")
    write_samples(read_llava_json(str(up.path)), str(tmp_path / "mid.parquet"))
    write_llava_json(read_samples(str(tmp_path / "mid.parquet")), str(tmp_path / "back.json"))
    assert json.loads((tmp_path / "back.json").read_text()) == up.truth["records"]


def test_tg_to_llava_to_tg_is_lossless(shapes_dir: Path, tmp_path: Path) -> None:
    samples = list(read_samples(str(shapes_dir / "val.parquet")))
    out = tmp_path / "shapes_llava.json"
    write_llava_json(samples, str(out))
    records = json.loads(out.read_text())
    assert all(r["conversations"][0]["from"] == "human" for r in records)
    assert {r["tg_data"]["task"] for r in records} >= {"rec", "coord2obj", "pope"}
    assert list(read_llava_json(str(out))) == samples


def test_object_images_need_the_extras(sample_factory: Callable[..., Sample], tmp_path: Path) -> None:
    s = sample_factory("with-objects")
    with pytest.raises(SampleError, match="object image"):
        sample_to_llava_record(s, extras=False)
    plain = sample_factory("plain", objects=[s.objects[0]], turns=[s.turns[0].__class__("user", "<image>\nhi"), s.turns[1]])
    assert "tg_data" not in sample_to_llava_record(plain, extras=False)
    with pytest.raises(DataError, match=r"'with-objects'.*object image"):
        write_llava_json([plain, s], str(tmp_path / "x.json"), extras=False)
    skip = SkipReport()
    assert write_llava_json([plain, s], str(tmp_path / "x.json"), extras=False, skip=skip) == 1
    assert skip.total == 1


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "r", "conversations": [{"from": "robot", "value": "beep"}]}, "unknown role 'robot' in conversation turn 0"),
        ({"id": "r", "image": "a.jpg", "conversations": [{"from": "human", "value": "no token"}]}, "0 <image> placeholder"),
        ({"id": "r", "conversations": [{"from": "human", "value": "<image> hi"}]}, "1 <image> placeholder(s) but no image"),
        ({"id": "r", "image": ["a.jpg", "b.jpg"], "conversations": []}, "multi-image"),
        ({"id": "r", "conversations": [{"from": "human"}]}, "needs 'from' and 'value'"),
        ({"conversations": []}, "no 'id'"),
        ({"id": "r", "conversations": "hello"}, "'conversations' must be a list"),
    ],
)
def test_bad_records_name_file_record_and_line(tmp_path: Path, record: dict, message: str) -> None:
    good = {"id": "g", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps([good, record, good], indent=1))
    with pytest.raises(DataError) as e:
        list(read_llava_json(str(path)))
    assert f"{path}: record 1 (line " in str(e.value) and message in str(e.value)
    skip = SkipReport()
    assert len(list(read_llava_json(str(path), skip=skip))) == 2 and skip.total == 1


def test_malformed_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('[\n{"id": "a", "conversations": [{"from": "human", "value": "hi"}]},\n{"id": "b", "conversations": [}\n]')
    it = read_llava_json(str(path))
    assert next(it).id == "a"
    with pytest.raises(DataError, match=re.escape(f"{path}:3: element 1 is not valid JSON")):
        next(it)


def test_json_lines_of_llava_records(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    rows = [{"id": f"q{k}", "image": f"{k}.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A."}]} for k in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert [s.image for s in read_llava_json(str(path))] == ["0.jpg", "1.jpg", "2.jpg"]


def test_reading_streams_with_flat_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tg_data.jsonstream

    monkeypatch.setattr(tg_data.jsonstream, "CHUNK_CHARS", 1 << 16)  # both files span many chunks
    record = {"id": "x", "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\n" + "word " * 50},
                                                            {"from": "gpt", "value": "answer " * 50}]}

    def peak(n: int) -> int:
        path = tmp_path / f"d{n}.json"
        path.write_text(json.dumps([dict(record, id=f"r{k}") for k in range(n)]))
        tracemalloc.start()
        try:
            for _ in read_llava_json(str(path)):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(2400) < 1.5 * peak(300) + 64_000
