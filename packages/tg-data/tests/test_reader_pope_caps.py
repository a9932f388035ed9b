"""POPE and LLaVA caps/boxes readers, on the real files in the shared fixtures and on files written here."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tg_data.box import Box
from tg_data.io import DataError, SkipReport
from tg_data.readers import (
    POPE_CATEGORIES,
    detect_format,
    pope_object,
    read_caps_boxes,
    read_caps_boxes_records,
    read_pope,
    read_pope_records,
)


@pytest.mark.parametrize("category", POPE_CATEGORIES)
def test_pope_label_files(shared_fixtures: Path, category: str) -> None:
    path = shared_fixtures / "pope" / f"coco_pope_{category}.json"
    records = list(read_pope_records(str(path)))
    assert len(records) == 3000 and len({r.image for r in records}) == 500
    assert Counter(r.label for r in records) == {"yes": 1500, "no": 1500}
    assert {r.category for r in records} == {category}  # from the file name
    assert all(r.object for r in records) and len({r.key for r in records}) == 3000
    samples = list(read_pope(str(path), image_root="/coco/val2014"))
    assert [s.turns[1].text.lower() for s in samples] == [r.label for r in records]
    first = samples[0]
    assert first.image == f"/coco/val2014/{records[0].image}" and first.task == "pope"
    assert first.turns[0].text == f"<image>\n{records[0].text}"
    assert first.meta["object"] == records[0].object and first.id == f"pope-{category}-{records[0].question_id}"


def test_llava_question_file_joins_to_the_labels_by_key(shared_fixtures: Path) -> None:
    questions = list(read_pope_records(str(shared_fixtures / "pope" / "llava_pope_test.jsonl")))
    assert len(questions) == 8910 and all(q.label is None for q in questions)
    assert Counter(q.category for q in questions) == {"adversarial": 3000, "popular": 3000, "random": 2910}
    labels = {
        r.key: r
        for c in POPE_CATEGORIES
        for r in read_pope_records(str(shared_fixtures / "pope" / f"coco_pope_{c}.json"))
    }
    joined = Counter(q.category for q in questions if q.key in labels)
    assert joined == {"adversarial": 3000, "popular": 3000, "random": 2910}
    # ids differ between the files and some texts differ ("imange"): the key still joins them
    typo = next(q for q in questions if "imange" in q.text)
    match = labels[typo.key]
    assert match.text != typo.question and match.object == typo.object
    assert any(labels[q.key].question_id != q.question_id for q in questions)
    samples = list(read_pope(str(shared_fixtures / "pope" / "llava_pope_test.jsonl")))
    assert all(len(s.turns) == 1 and s.turns[0].role == "user" for s in samples)  # questions only
    assert samples[0].turns[0].text.endswith("Answer the question using a single word or phrase.")


@pytest.mark.parametrize(
    ("text", "obj"),
    [
        ("Is there a snowboard in the image?", "snowboard"),
        ("Is there an umbrella in the imange?\nAnswer the question using a single word or phrase.", "umbrella"),
        ("<image>\nIs there a dining table in the image?", "dining table"),
        ("Is there a skis in the image?", "skis"),
        ("What colour is the car?", None),
    ],
)
def test_pope_object(text: str, obj: str | None) -> None:
    assert pope_object(text) == obj


def test_bad_pope_record_is_named(upstream: Callable) -> None:
    up = upstream("pope", bad=True)
    with pytest.raises(DataError, match=r"coco_pope_popular\.json:3: POPE label must be 'yes' or 'no', got 'maybe'"):
        list(read_pope(str(up.path)))
    skip = SkipReport()
    assert len(list(read_pope(str(up.path), skip=skip))) == 3 and skip.total == 1


def test_pope_category_given_or_unknown(tmp_path: Path) -> None:
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps({"question_id": 7, "image": "a.jpg", "text": "Is there a cat in the image?"}) + "\n")
    assert next(iter(read_pope_records(str(path)))).category is None
    assert next(iter(read_pope(str(path), category="random"))).id == "pope-random-7"


# caps/boxes ---------------------------------------------------------------------------------------
def test_caps_boxes_records_from_the_fixture(shared_fixtures: Path) -> None:
    path = shared_fixtures / "llava" / "caps_boxes_coco2014_val_80.jsonl"
    records = list(read_caps_boxes_records(str(path)))
    assert len(records) == 80 and Counter(len(r.captions) for r in records) == {5: 79, 6: 1}
    assert records[0].id == "000000296284" and records[0].instances[0].category == "donut"
    assert records[0].instances[0].bbox == (0.37, 0.584, 0.504, 0.709)
    assert all(0 <= v <= 1 for r in records for i in r.instances for v in i.bbox)
    assert detect_format(str(path)) == "caps-boxes"


def test_caps_boxes_samples_place_boxes_in_the_padded_square(shared_fixtures: Path) -> None:
    path = shared_fixtures / "llava" / "caps_boxes_coco2014_val_80.jsonl"
    records = list(read_caps_boxes_records(str(path)))
    # give each image a different shape, so padding offsets differ
    sizes = {r.image: ((640, 480), (480, 640), (500, 500))[k % 3] for k, r in enumerate(records)}
    samples = list(read_caps_boxes(str(path), sizes=sizes))
    assert len(samples) == 401 and {s.task for s in samples} == {"caption"}
    by_image: dict[str, list] = {}
    for s in samples:
        by_image.setdefault(s.meta["image_id"], []).append(s)
    for r in records:
        group = by_image[r.id]
        assert [s.turns[1].text for s in group] == [c.strip() for c in r.captions]
        w, h = sizes[r.image]
        for s in group:
            assert s.size == (w, h)
            assert [o.label for o in s.objects] == [i.category for i in r.instances]
            for o, inst in zip(s.objects, r.instances, strict=True):
                assert o.box.to_image_relative(w, h) == pytest.approx(inst.bbox, abs=1e-9)
                assert o.box == Box.from_image_relative(*inst.bbox, w, h)


def test_caps_boxes_sizes_from_images_or_a_coco_file(upstream: Callable, image_writer: Callable, tmp_path: Path) -> None:
    up = upstream("caps-boxes")
    images = tmp_path / "val2014"
    image_writer(images / "000000296284.jpg", 640, 480)
    image_writer(images / "000000151358.jpg", 480, 640)
    from_images = list(read_caps_boxes(str(up.path), image_root=str(images)))
    assert [s.size for s in from_images] == [(640, 480), (640, 480), (480, 640)]
    coco = tmp_path / "captions_val2014.json"
    coco.write_text(json.dumps({"images": [
        {"file_name": "000000296284.jpg", "width": 640, "height": 480, "id": 296284},
        {"file_name": "000000151358.jpg", "width": 480, "height": 640, "id": 151358},
    ]}))
    from_coco = list(read_caps_boxes(str(up.path), sizes=str(coco)))
    assert [s.objects for s in from_coco] == [s.objects for s in list(read_caps_boxes(str(up.path), **up.options))]
    (images / "000000151358.jpg").unlink()
    with pytest.raises(DataError, match=r"jsonl:2: image .*000000151358\.jpg not found"):
        list(read_caps_boxes(str(up.path), image_root=str(images)))


def test_caps_boxes_need_sizes(upstream: Callable) -> None:
    up = upstream("caps-boxes")
    with pytest.raises(DataError, match="pass sizes"):
        read_caps_boxes(str(up.path))
    with pytest.raises(DataError, match=r"no size known for image '000000296284\.jpg'"):
        list(read_caps_boxes(str(up.path), sizes={"other.jpg": (1, 1)}))


def test_bad_caps_boxes_record_is_named(upstream: Callable) -> None:
    up = upstream("caps-boxes", bad=True)
    with pytest.raises(DataError, match=r"jsonl:2: instance 0: 'bbox' must be"):
        list(read_caps_boxes(str(up.path), **up.options))
    skip = SkipReport()
    assert len(list(read_caps_boxes(str(up.path), skip=skip, **up.options))) == 3 and skip.total == 1
