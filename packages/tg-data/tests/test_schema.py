from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tg_data.box import Box
from tg_data.schema import ObjectRef, Sample, SampleError, Show, Turn


def test_round_trip_through_the_serialised_form(sample_factory: Callable[..., Sample]) -> None:
    s = sample_factory()
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    assert isinstance(d["meta"], str)  # meta travels as a JSON string (one Parquet column type)
    back = Sample.from_dict(json.loads(json.dumps(d)))
    assert back == s
    assert back.objects[0].box == Box(0.1, 0.2, 0.5, 0.6)
    assert back.meta == {"k": [1, 2], "note": "ü"}


def test_serialised_form_is_stable() -> None:
    s = Sample(id="a", turns=[Turn("user", "hi"), Turn("assistant", "yo")])
    assert s.to_dict() == {
        "id": "a", "image": None, "width": None, "height": None, "task": "vqa", "source": "",
        "objects": [], "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "yo"}], "meta": "",
    }


def test_object_images_follow_placeholder_order(sample_factory: Callable[..., Sample]) -> None:
    s = sample_factory()
    assert [o.label for o in s.object_images] == ["dog"]
    assert s.size == (64, 48)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"turns": [Turn("user", "no image token"), Turn("assistant", "x")]}, "0 <image> placeholder(s) but an image"),
        ({"turns": [Turn("user", "<image><image> <object>"), Turn("assistant", "x")]}, "2 <image>"),
        ({"image": None}, "1 <image> placeholder(s) but no image"),
        ({"turns": [Turn("user", "<image> <object> <object>"), Turn("assistant", "x")]}, "2 <object> placeholder(s) but 1"),
        ({"turns": [Turn("user", "<image> no object"), Turn("assistant", "x")]}, "0 <object> placeholder(s) but 1"),
        ({"turns": []}, "no turns"),
        ({"width": 10, "height": None}, "only one of width/height"),
        ({"width": 0, "height": 5}, "non-positive size"),
    ],
)
def test_inconsistent_samples_are_refused(
    sample_factory: Callable[..., Sample], change: dict, message: str
) -> None:
    with pytest.raises(SampleError, match="sample 's1'") as e:
        sample_factory(**change)
    assert message in str(e.value)


def test_object_image_needs_a_picture_to_crop_from(sample_factory: Callable[..., Sample]) -> None:
    turns = [Turn("user", "Where is <object>?"), Turn("assistant", "there")]
    objects = [ObjectRef(Box(0.1, 0.1, 0.2, 0.2), Show.IMAGE.value)]
    with pytest.raises(SampleError, match="no image to crop"):
        Sample(id="x", turns=turns, objects=objects)
    own = [ObjectRef(Box(0.1, 0.1, 0.2, 0.2), Show.IMAGE.value, image="crop.png")]
    assert Sample(id="x", turns=turns, objects=own).object_images[0].image == "crop.png"


def test_unknown_role_and_show_mode_are_named() -> None:
    with pytest.raises(SampleError, match="unknown role 'bot'"):
        Turn("bot", "hi")
    with pytest.raises(SampleError, match="unknown object show mode 'pixels'"):
        ObjectRef(Box(0.1, 0.1, 0.2, 0.2), "pixels")
    with pytest.raises(SampleError, match="margin"):
        ObjectRef(Box(0.1, 0.1, 0.2, 0.2), margin=-1)


def test_from_dict_names_the_sample_and_field(sample_factory: Callable[..., Sample]) -> None:
    d = sample_factory().to_dict()
    d["objects"][0]["box"] = [0.5, 0.5, 0.1, 0.1]
    with pytest.raises(SampleError, match=r"sample 's1': box .*inverted"):
        Sample.from_dict(d)
    d = sample_factory().to_dict()
    d["turns"][1]["role"] = "robot"
    with pytest.raises(SampleError, match="sample 's1': unknown role 'robot'"):
        Sample.from_dict(d)
    with pytest.raises(SampleError, match="no 'id'"):
        Sample.from_dict({"turns": []})
    with pytest.raises(SampleError, match="'turns' must be a list"):
        Sample.from_dict({"id": "q", "turns": "hello"})
    with pytest.raises(SampleError, match="must be an object"):
        Sample.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]
    d = sample_factory().to_dict()
    d["objects"][0]["box"] = [0.1, float("nan"), 0.5, 0.6]
    with pytest.raises(SampleError, match=r"sample 's1'.*finite"):
        Sample.from_dict(d)


def test_problems_lists_everything_at_once(sample_factory: Callable[..., Sample]) -> None:
    good = sample_factory()
    assert good.problems() == []
    broken = object.__new__(Sample)  # bypass construction to inspect problems() on a broken record
    for name, value in {
        "id": "b", "turns": [Turn("user", "x")], "image": "i.png", "objects": good.objects, "task": "vqa",
        "source": "", "width": 5, "height": None, "meta": {},
    }.items():
        object.__setattr__(broken, name, value)
    problems = broken.problems()
    assert len(problems) == 3
    assert any("<image>" in p for p in problems) and any("<object>" in p for p in problems)
