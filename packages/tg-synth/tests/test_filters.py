"""The filters of steps 2 and 5 on hand-made cases: what stays, what goes, and the count of each reason."""

from __future__ import annotations

import random

import pytest

from tg_data.box import Box
from tg_synth.config import FilterConfig, GroundingConfig
from tg_synth.filters import (
    FilterReport,
    choose_options,
    ground_objects,
    object_area_fraction,
    object_image_problem,
    s1_dictionary,
    usable_object_images,
)
from tg_synth.records import Annotation, Detection, Instance

CAR = Box(0.10, 0.10, 0.30, 0.30)
DOG = Box(0.50, 0.50, 0.70, 0.70)
CAT = Box(0.75, 0.10, 0.90, 0.25)


def det(label: str, box: Box, score: float) -> Detection:
    return Detection(label, box, score)


def test_low_confidence_boxes_are_dropped_and_unconfirmed_objects_counted() -> None:
    report = FilterReport()
    got = ground_objects(
        ["car", "dog", "unicorn"],
        [det("car", CAR, 0.9), det("dog", DOG, 0.2)],
        [], GroundingConfig(min_confidence=0.35), report,
    )
    assert [(i.label, i.box) for i in got] == [("car", CAR)]
    # the dog had only a low-confidence box; the unicorn had none: neither is confirmed
    assert report.to_dict() == {"grounding.low_confidence": 1, "grounding.unconfirmed": 2}


def test_an_object_with_too_many_boxes_is_dropped_as_one_item() -> None:
    report = FilterReport()
    boxes = [Box(0.1 * k, 0.0, 0.1 * k + 0.05, 0.05) for k in range(5)]
    got = ground_objects(
        ["shape", "car"], [det("shape", b, 0.5) for b in boxes] + [det("car", CAR, 0.8)],
        [], GroundingConfig(max_boxes_per_object=3), report,
    )
    assert [i.label for i in got] == ["car"]
    assert report.to_dict() == {"grounding.too_many_boxes": 1}


def test_duplicate_boxes_keep_the_more_confident_label() -> None:
    report = FilterReport()
    near_car = Box(0.11, 0.10, 0.30, 0.31)  # IoU with CAR ~0.9
    got = ground_objects(
        ["vehicle", "car"], [det("vehicle", near_car, 0.5), det("car", CAR, 0.8), det("car", DOG, 0.7)],
        [], GroundingConfig(duplicate_iou=0.7), report,
    )
    assert [(i.id, i.label, i.box) for i in got] == [(1, "car", CAR), (2, "car", DOG)]
    assert report.to_dict() == {"grounding.duplicate_box": 1}
    assert s1_dictionary(got) == {"car": [CAR.to_list(), DOG.to_list()]}


def test_annotations_replace_matching_detections_and_add_their_objects() -> None:
    report = FilterReport()
    annotated_car = Box(0.10, 0.11, 0.31, 0.30)
    got = ground_objects(
        ["car", "dog"], [det("car", CAR, 0.9), det("dog", DOG, 0.9)],
        [Annotation("car", annotated_car, "refcoco"), Annotation("cat", CAT, "vg")],
        GroundingConfig(annotation_iou=0.7), report,
    )
    by_label = {i.label: i for i in got}
    assert set(by_label) == {"car", "dog", "cat"}
    assert by_label["car"].box == annotated_car and by_label["car"].source == "refcoco" and by_label["car"].score == 1.0
    assert by_label["cat"].source == "vg"
    assert by_label["dog"].source == "detector"
    assert report.merged == {"detection_matched_annotation": 1}
    assert report.to_dict() == {}


def test_instance_ids_follow_position_not_input_order() -> None:
    got = ground_objects(["dog", "car"], [det("dog", DOG, 0.9), det("car", CAR, 0.9)], [], GroundingConfig(),
                         FilterReport())
    assert [(i.id, i.label) for i in got] == [(1, "car"), (2, "dog")]


def test_object_image_area_uses_the_original_image_not_its_padding() -> None:
    # a 200 x 100 image is padded to 200 x 200: the image spans y in [0.25, 0.75] of the square
    whole = Box(0.0, 0.25, 1.0, 0.75)
    assert object_area_fraction(whole, 200, 100) == pytest.approx(1.0)
    quarter = Box(0.0, 0.25, 0.5, 0.5)
    assert object_area_fraction(quarter, 200, 100) == pytest.approx(0.25)
    cfg = FilterConfig(min_object_area=0.05, max_object_area=0.5)
    assert object_image_problem(whole, 200, 100, cfg) == "object_image.too_large"
    assert object_image_problem(quarter, 200, 100, cfg) is None
    tiny = Box(0.0, 0.25, 0.1, 0.3)  # 20 x 10 px of 200 x 100 = 1 %
    assert object_image_problem(tiny, 200, 100, cfg) == "object_image.too_small"


def test_usable_object_images_counts_each_rejected_instance() -> None:
    report = FilterReport()
    insts = [Instance(1, "a", Box(0.0, 0.0, 1.0, 1.0), 0.9, "detector"),
             Instance(2, "b", Box(0.1, 0.1, 0.4, 0.4), 0.9, "detector"),
             Instance(3, "c", Box(0.1, 0.1, 0.12, 0.12), 0.9, "detector")]
    kept = usable_object_images(insts, 100, 100, FilterConfig(min_object_area=0.01, max_object_area=0.5), report)
    assert [i.id for i in kept] == [2]
    assert report.to_dict() == {"object_image.too_large": 1, "object_image.too_small": 1}


def test_options_that_overlap_another_option_are_skipped() -> None:
    report = FilterReport()
    target = Instance(1, "car", CAR, 0.9, "detector")
    loose_car = Instance(2, "car", Box(0.08, 0.08, 0.33, 0.33), 0.5, "detector")  # IoU with CAR 0.64
    dog = Instance(3, "dog", DOG, 0.9, "detector")
    cat = Instance(4, "cat", CAT, 0.9, "detector")
    options = choose_options(target, [target, loose_car, dog, cat], 4, 0.3, random.Random(0), report)
    assert options is not None
    assert {o.id for o in options} == {1, 3, 4}
    assert report.to_dict() == {"options.overlap": 1}


def test_a_question_left_with_one_option_is_dropped() -> None:
    report = FilterReport()
    target = Instance(1, "car", CAR, 0.9, "detector")
    loose_car = Instance(2, "car", Box(0.08, 0.08, 0.33, 0.33), 0.5, "detector")
    assert choose_options(target, [target, loose_car], 4, 0.3, random.Random(0), report) is None
    assert report.to_dict() == {"options.overlap": 1, "options.too_few": 1}


def test_options_respect_the_maximum_and_always_hold_the_target() -> None:
    insts = [Instance(k, f"o{k}", Box(0.1 * k, 0.0, 0.1 * k + 0.08, 0.08), 0.9, "detector") for k in range(1, 9)]
    for seed in range(20):
        options = choose_options(insts[0], insts, 4, 0.3, random.Random(seed), FilterReport())
        assert options is not None and len(options) == 4 and insts[0] in options
        assert len({o.id for o in options}) == 4
