"""Every reader held to one contract: stream valid samples in the project's frame, name the file and
record of a bad one, skip and count it when asked, and refuse options it does not take."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable

import pytest

from tg_data.coords import render_box
from tg_data.io import DataError, SkipReport
from tg_data.readers import READERS, OptionError, detect_format, read
from tg_data.schema import Sample, Show

FORMATS = ["tg", "llava", "refcoco", "vg", "flickr30k", "pope", "caps-boxes"]


def test_every_reader_is_covered_here() -> None:
    assert sorted(READERS) == sorted(FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_signature(fmt: str) -> None:
    params = inspect.signature(READERS[fmt].read).parameters
    assert next(iter(params)) == "path"
    assert params["skip"].default is None and params["skip"].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(params[o].default is not inspect.Parameter.empty for o in READERS[fmt].options)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_yields_consistent_samples(fmt: str, upstream: Callable) -> None:
    up = upstream(fmt)
    samples = list(read(fmt, str(up.path), **up.options))
    assert len(samples) == up.samples
    assert all(isinstance(s, Sample) for s in samples)
    assert len({s.id for s in samples}) == len(samples)
    for s in samples:
        assert s.problems() == []
        text = " ".join(t.text for t in s.turns)
        for o in s.objects:
            assert all(0 <= v <= 1 for v in o.box.to_list())
            if o.show == Show.COORD:
                assert render_box(o.box) in text
            if s.size is not None:  # boxes lie on the image, not in the padding
                x1, y1, x2, y2 = o.box.to_pixels(*s.size)
                assert x1 >= -1e-6 and y1 >= -1e-6 and x2 <= s.size[0] + 1e-6 and y2 <= s.size[1] + 1e-6
    assert detect_format(str(up.path)) == fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_bad_record_is_named_or_skipped_and_counted(fmt: str, upstream: Callable) -> None:
    up = upstream(fmt, bad=True)
    with pytest.raises(DataError) as e:
        list(read(fmt, str(up.path), **up.options))
    assert up.path.name in str(e.value) and "--skip-invalid" in str(e.value)
    skip = SkipReport()
    samples = list(read(fmt, str(up.path), skip=skip, **up.options))
    assert len(samples) == up.samples
    assert skip.total == 1
    (examples,) = skip.examples.values()
    assert up.path.name in examples[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_options_a_reader_does_not_take_are_refused(fmt: str, upstream: Callable) -> None:
    up = upstream(fmt)
    with pytest.raises(OptionError, match=f"format '{fmt}' does not take no_such_option"):
        read(fmt, str(up.path), no_such_option=1, **up.options)


def test_unknown_format() -> None:
    with pytest.raises(DataError, match="unknown format 'coco-panoptic'"):
        read("coco-panoptic", "x")


def test_undetectable_inputs_are_named(tmp_path) -> None:
    (tmp_path / "notes.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(DataError, match="cannot tell its format"):
        detect_format(str(tmp_path / "notes.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell what this folder holds"):
        detect_format(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no such file"):
        detect_format(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("fmt", ["pope", "caps-boxes", "tg"])
def test_a_line_that_is_not_json_can_be_skipped(fmt: str, upstream: Callable) -> None:
    up = upstream(fmt)
    lines = up.path.read_text().splitlines()
    up.path.write_text("\n".join([lines[0], '{"question_id": 5, "image": ', *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=rf"{up.path.name}:2: malformed JSON"):
        list(read(fmt, str(up.path), **up.options))
    skip = SkipReport()
    assert len(list(read(fmt, str(up.path), skip=skip, **up.options))) == up.samples
    assert skip.total == 1 and "malformed JSON" in next(iter(skip.reasons))


def test_a_malformed_vg_entry_is_counted(upstream: Callable) -> None:
    up = upstream("vg")
    entries = up.truth["regions"] + [{"regions": "none"}]
    up.path.write_text(json.dumps(entries))
    skip = SkipReport()
    assert len(list(read("vg", str(up.path), skip=skip, **up.options))) == up.samples
    assert skip.reasons == {"an image entry needs an integer 'id' and a 'regions' list": 1}
