from __future__ import annotations

import pytest

from tg_data.box import Box
from tg_data.coords import render_box
from tg_data.schema import ObjectRef, Sample, Turn
from tg_eval.errors import EvalError
from tg_eval.predictions import PredictionSet
from tg_eval.rec import pixel_iou, rec_targets, score_rec

# A 200 x 100 image: the padded square is 200 px, the image sits 50 px below its top edge.
W, H = 200, 100
TARGET_PX = (20, 10, 120, 60)  # 100 x 50 px


def rec_sample(sid: str, box_px: tuple[float, float, float, float], split: str | None = None) -> Sample:
    box = Box.from_pixels(*box_px, W, H)
    return Sample(
        id=sid,
        image=f"{sid}.jpg",
        width=W,
        height=H,
        task="rec",
        turns=[Turn("user", "<image>\nOutput the coordinate of the dog."), Turn("assistant", render_box(box))],
        objects=[ObjectRef(box)],
        meta={"split": split} if split else {},
    )


def answer_px(x1: float, y1: float, x2: float, y2: float) -> str:
    """Coordinate text of a pixel box of the 200 x 100 image (y may reach into the padding)."""
    s, oy = 200, 50
    return f"It is at [{x1 / s:.3f},{(y1 + oy) / s:.3f},{x2 / s:.3f},{(y2 + oy) / s:.3f}]."


def test_pixel_iou_clips_boxes_to_the_image_before_comparing() -> None:
    target = Box.from_pixels(*TARGET_PX, W, H)
    # Prediction (20, -50, 120, 60): its top 50 px lie in the padding.
    # Clipped to the image it is (20, 0, 120, 60), area 100*60 = 6000; the intersection with the
    # target is the whole target, 100*50 = 5000, so IoU = 5000 / 6000 = 0.8333.
    # (Unclipped it would be 5000 / (100*110) = 0.4545 and miss the 0.5 threshold.)
    # In the padded square: x 20/200 = 0.1, 120/200 = 0.6; y (-50+50)/200 = 0, (60+50)/200 = 0.55.
    pred = Box(0.1, 0.0, 0.6, 0.55)
    assert pixel_iou(pred, target, W, H) == pytest.approx(5000 / 6000)
    # A box entirely in the padding has no area on the image: IoU 0.
    assert pixel_iou(Box(0.0, 0.0, 1.0, 0.2), target, W, H) == 0.0


def test_score_rec_per_split_with_unparseable_and_missing_answers() -> None:
    samples = [
        rec_sample("a", TARGET_PX, "refcoco_val"),
        rec_sample("b", TARGET_PX, "refcoco_val"),
        rec_sample("c", TARGET_PX, "refcoco_val"),
        rec_sample("d", TARGET_PX, "refcoco_testA"),
        rec_sample("e", TARGET_PX, "refcoco_testA"),
    ]
    preds = PredictionSet.from_records(
        [
            # a: (40,10,140,60): intersection 80*50 = 4000, union 5000+5000-4000 = 6000 -> 0.667, a hit.
            {"id": "a", "text": answer_px(40, 10, 140, 60)},
            # b: (70,10,170,60): intersection 50*50 = 2500, union 7500 -> 0.333, a miss.
            {"id": "b", "text": answer_px(70, 10, 170, 60)},
            # c: pixel values instead of fractions: not guessed, unparseable, wrong.
            {"id": "c", "text": "[20, 10, 120, 60]"},
            # d: the padding case of the test above (IoU 0.833), a hit.
            {"id": "d", "text": "[0.100,0.000,0.600,0.550]"},
            # e: no prediction at all -> missing, wrong.
            {"id": "zzz", "text": "[0.1,0.1,0.2,0.2]"},  # matches no target
        ]
    )
    result = score_rec(rec_targets(samples), preds, name="run")
    # refcoco_val: 1 hit of 3 = 33.33 %; refcoco_testA: 1 hit of 2 = 50.00 %; all: 2 of 5 = 40.00 %.
    assert list(result.rows) == ["refcoco_val", "refcoco_testA", "all"]  # papers' split order, then all
    assert result.rows["refcoco_val"] == {"acc": 33.33, "n": 3, "correct": 1, "unparseable": 1, "missing": 0}
    assert result.rows["refcoco_testA"] == {"acc": 50.0, "n": 2, "correct": 1, "unparseable": 0, "missing": 1}
    assert result.rows["all"]["acc"] == 40.0
    assert result.counts["unmatched_predictions"] == 1
    assert result.counts["unparseable"] == 1 and result.counts["missing"] == 1
    assert result.summary == {"refcoco_val": 33.33, "refcoco_testA": 50.0, "all": 40.0}
    assert result.details["unparseable_examples"][0]["id"] == "c"


def test_rec_threshold_is_inclusive() -> None:
    # Prediction (70,10,120,60) lies inside the target: area 50*50 = 2500 = the intersection;
    # union = the target's 5000, so IoU = 0.5 exactly: a hit at 0.5, a miss at 0.51.
    samples = [rec_sample("a", TARGET_PX)]
    preds = PredictionSet.from_records([{"id": "a", "text": answer_px(70, 10, 120, 60)}])
    assert score_rec(rec_targets(samples), preds).rows["all"]["acc"] == 100.0
    assert score_rec(rec_targets(samples), preds, threshold=0.51).rows["all"]["acc"] == 0.0


def test_rec_needs_image_size_and_a_target() -> None:
    s = rec_sample("a", TARGET_PX)
    no_size = Sample(id="a", image="a.jpg", task="rec", turns=s.turns, objects=s.objects)
    with pytest.raises(EvalError, match="width/height"):
        rec_targets([no_size])
    with pytest.raises(EvalError, match="no REC targets"):
        score_rec([], PredictionSet())


def test_split_labels_name_their_dataset() -> None:
    from dataclasses import replace

    from tg_eval.rec import split_label

    s = rec_sample("a", TARGET_PX)
    assert split_label(s, "shapes-test") == "shapes-test"  # no split: the default
    assert split_label(replace(s, meta={"split": "testA", "dataset": "refcoco+"})) == "refcoco+_testA"
    assert split_label(replace(s, source="refcocog", meta={"split": "val"})) == "refcocog_val"
    assert split_label(replace(s, source="refcoco", meta={"split": "refcoco_testB"})) == "refcoco_testB"
