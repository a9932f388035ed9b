from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest

from tg_data.io import DataError
from tg_data.jsonstream import iter_json_array, json_top_level_kind


def _random_value(rng: random.Random, depth: int = 0) -> object:
    r = rng.random()
    if depth > 2 or r < 0.3:
        return rng.choice([0, 1, -12.5e3, 123456789, 1e-7, 3.25, "a\"b\nc", "ünï", "", True, False, None])
    if r < 0.6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_elements_match_json_load_at_every_chunk_boundary(tmp_path: Path, chunk: int) -> None:
    rng = random.Random(chunk)
    path = tmp_path / "a.json"
    for _ in range(60):
        data = [_random_value(rng) for _ in range(rng.randint(0, 6))]
        path.write_text(json.dumps(data, indent=rng.choice([None, 1, 2])))
        assert [v for _, _, v in iter_json_array(str(path), chunk_chars=chunk)] == data


def test_numbers_split_by_a_chunk_are_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    path.write_text("[123456.789e-2, 1234567890123, -0.5]")
    for chunk in range(1, 12):
        assert [v for _, _, v in iter_json_array(str(path), chunk_chars=chunk)] == [123456.789e-2, 1234567890123, -0.5]


def test_index_and_line_of_each_element(tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    path.write_text('[\n  {"a": 1},\n\n  {"b":\n 2},\n  3\n]\n')
    assert list(iter_json_array(str(path), chunk_chars=4)) == [(0, 2, {"a": 1}), (1, 4, {"b": 2}), (2, 6, 3)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[\n {"a": 1},\n {"a": 2,},\n {"a": 3}\n]', ":3: element 1 is not valid JSON"),
        ("[1,2,]", "trailing comma"),
        ("[1 2]", "expected ',' or ']' after element 0"),
        ("[1,,2]", "element 1 is missing"),
        ("[1,2", "no closing ']'"),
        ("[1] x", "unexpected text after the closing ']'"),
        ('{"a": 1}', "expected a JSON array"),
        ("", "expected a JSON array"),
        ('[{"a": tru}]', "element 0 is not valid JSON"),
    ],
)
@pytest.mark.parametrize("chunk", [2, 1 << 20])
def test_malformed_arrays_name_the_element_and_line(tmp_path: Path, text: str, message: str, chunk: int) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        list(iter_json_array(str(path), chunk_chars=chunk))
    assert str(path) in str(e.value) and message in str(e.value)


def test_elements_before_a_bad_one_are_yielded(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"ok": 1}, {"ok": 2}, {"broken": ]')
    it = iter_json_array(str(path), chunk_chars=5)
    assert next(it)[2] == {"ok": 1} and next(it)[2] == {"ok": 2}
    with pytest.raises(DataError, match="element 2"):
        next(it)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        list(iter_json_array(str(tmp_path / "none.json")))


def test_top_level_kind(tmp_path: Path) -> None:
    for text, kind in (("  [1]", "array"), ('{"a": 1}\n{"a": 2}', "object"), ("1", "other")):
        (tmp_path / "k.json").write_text(text)
        assert json_top_level_kind(str(tmp_path / "k.json")) == kind


def test_memory_does_not_grow_with_the_array(tmp_path: Path) -> None:
    record = {"id": "x" * 20, "conversations": [{"from": "human", "value": "word " * 60}] * 2}
    small, large = tmp_path / "small.json", tmp_path / "large.json"
    small.write_text(json.dumps([record] * 300))
    large.write_text(json.dumps([record] * 4800))

    def peak(path: Path) -> int:
        tracemalloc.start()
        try:
            for _ in iter_json_array(str(path), chunk_chars=1 << 16):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    p_small, p_large = peak(small), peak(large)
    assert large.stat().st_size > 3_000_000
    assert p_large < 1.5 * p_small + 64_000
    assert p_large < large.stat().st_size / 10
