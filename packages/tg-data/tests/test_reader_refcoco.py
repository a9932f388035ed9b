from __future__ import annotations

import os
import pickle
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tg_data.box import Box
from tg_data.coords import render_box
from tg_data.io import DataError, SkipReport
from tg_data.readers import UnsafePickleError, load_plain_pickle, read_refcoco


def test_one_sample_per_sentence_with_its_split(upstream: Callable) -> None:
    up = upstream("refcoco")
    samples = list(read_refcoco(str(up.path), image_root="/coco/train2014"))
    assert len(samples) == up.samples
    assert Counter(s.meta["split"] for s in samples) == {"train": 2, "val": 1, "testA": 2, "testB": 1}
    first = samples[0]
    assert first.id == "refcoco-unc-0-0" and first.source == "refcoco" and first.task == "rec"
    assert first.image == "/coco/train2014/COCO_train2014_000000581857.jpg"
    assert (first.width, first.height) == (640, 480)
    assert first.turns[0].text == "<image>\nOutput the coordinate of the lady with the blue shirt."
    assert first.meta["category"] == "person" and first.meta["split_by"] == "unc"


def test_boxes_are_the_coco_boxes_in_the_padded_square(upstream: Callable) -> None:
    up = upstream("refcoco")
    for s in read_refcoco(str(up.path)):
        ann = up.truth["anns"][s.meta["ann_id"]]
        im = up.truth["images"][ann["image_id"]]
        x, y, w, h = ann["bbox"]
        expected = Box.from_pixels(x, y, min(x + w, im["width"]), y + h, im["width"], im["height"])
        assert s.objects[0].box.to_list() == pytest.approx(expected.to_list())
        assert s.turns[1].text == render_box(s.objects[0].box)
        px = s.objects[0].box.to_pixels(im["width"], im["height"])
        assert px == pytest.approx((x, y, min(x + w, im["width"]), y + h))


def test_splits_filter_and_unknown_splits_are_named(upstream: Callable) -> None:
    up = upstream("refcoco")
    test_a = list(read_refcoco(str(up.path), splits=["testA"]))
    assert [s.turns[0].text.split("of ")[-1] for s in test_a] == ["man on right.", "right guy."]
    with pytest.raises(DataError, match=r"no refs in split\(s\) \['test'\]"):
        read_refcoco(str(up.path), splits=["test"])


def test_reg_turns_coordinates_into_the_question(upstream: Callable) -> None:
    up = upstream("refcoco")
    s = next(iter(read_refcoco(str(up.path), task="reg")))
    assert render_box(s.objects[0].box) in s.turns[0].text and s.turns[1].text == "the lady with the blue shirt"
    with pytest.raises(DataError, match="'rec' or 'reg'"):
        read_refcoco(str(up.path), task="caption")


def test_refs_file_path_and_split_by_choice(upstream: Callable) -> None:
    up = upstream("refcoco")
    by_file = list(read_refcoco(str(up.path / "refs(unc).p")))
    assert [s.id for s in by_file] == [s.id for s in read_refcoco(str(up.path))]
    shutil.copy(up.path / "refs(unc).p", up.path / "refs(google).p")
    with pytest.raises(DataError, match=r"several refs files.*split_by"):
        read_refcoco(str(up.path))
    google = list(read_refcoco(str(up.path), split_by="google"))
    assert google[0].id.startswith("refcoco-google-")


def test_refcoco_plus_and_g_take_their_names_from_the_folder(upstream: Callable, tmp_path: Path) -> None:
    up = upstream("refcoco")
    plus = tmp_path / "refcoco+"
    shutil.copytree(up.path, plus)
    g = tmp_path / "refcocog"
    g.mkdir()
    shutil.copy(up.path / "instances.json", g / "instances.json")
    shutil.copy(up.path / "refs(unc).p", g / "refs(umd).p")
    assert {s.source for s in read_refcoco(str(plus))} == {"refcoco+"}
    assert next(iter(read_refcoco(str(g)))).id.startswith("refcocog-umd-")


def test_a_missing_annotation_is_named_and_can_be_skipped(upstream: Callable) -> None:
    up = upstream("refcoco", bad=True)
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: ref 9: annotation 999 is not in"):
        list(read_refcoco(str(up.path)))
    skip = SkipReport()
    assert len(list(read_refcoco(str(up.path), skip=skip))) == up.samples and skip.total == 1


def test_python2_pickles_load(tmp_path: Path) -> None:
    # protocol 2 as Python 2 writes it: SHORT_BINSTRING ('U') for byte strings, BINUNICODE for unicode
    data = b"\x80\x02]q\x00(U\x03abcq\x01X\x02\x00\x00\x00\xc3\xa9q\x02}q\x03U\x05splitq\x04U\x05testAq\x05se."
    path = tmp_path / "refs(unc).p"
    path.write_bytes(data)
    assert load_plain_pickle(str(path)) == ["abc", "é", {"split": "testA"}]


def test_plain_containers_and_numbers_load(tmp_path: Path) -> None:
    value = {"a": [1, 2.5, None, True], "b": (3, "x"), "c": {1, 2}, "d": frozenset({"y"}), "f": 10**30}
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.p"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        assert load_plain_pickle(str(path)) == value
    # bytes have their own opcode from protocol 3 on (protocol 2 rebuilds them through a codec call)
    path.write_bytes(pickle.dumps([b"raw"], protocol=4))
    assert load_plain_pickle(str(path)) == [b"raw"]


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_malicious_pickle_is_refused_before_it_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 0}, _RunsACommand(marker)], protocol=protocol))
    assert pickle.loads(path.read_bytes()) is not None and marker.exists()  # the payload is real
    marker.unlink()
    with pytest.raises(UnsafePickleError, match=r"refusing to load .* asks to import (posix|os|nt)\.system") as e:
        load_plain_pickle(str(path))
    assert str(path) in str(e.value) and isinstance(e.value, DataError)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(_Evaluates(), protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"(builtins|__builtin__)\.eval"):
        load_plain_pickle(str(path))


def test_a_malicious_refs_file_stops_the_reader(upstream: Callable, tmp_path: Path) -> None:
    up = upstream("refcoco")
    marker = tmp_path / "pwned"
    (up.path / "refs(unc).p").write_bytes(pickle.dumps(_RunsACommand(marker), protocol=2))
    with pytest.raises(UnsafePickleError):
        read_refcoco(str(up.path))
    assert not marker.exists()


def test_broken_files_are_named(upstream: Callable) -> None:
    up = upstream("refcoco")
    (up.path / "refs(unc).p").write_bytes(b"\x80\x02]q\x00(K\x01")  # cut short
    with pytest.raises(DataError, match="not a readable pickle"):
        read_refcoco(str(up.path))
    up = upstream("refcoco")
    (up.path / "instances.json").write_text('{"images": [}')
    with pytest.raises(DataError, match=r"instances\.json:1: malformed JSON"):
        read_refcoco(str(up.path))
