"""Referring expression comprehension: is the predicted box the referred object?

A prediction is correct when its IoU with the target is at least 0.5, measured in pixels of the
original image: both boxes leave the padded square through ``Box.to_pixels`` and are clipped to
the image, so a box that strays into the padding is judged by the part that lies on the picture.
Answers without a parseable box are wrong and counted; so are targets nobody answered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from tg_data.box import Box
from tg_data.coords import parse_box
from tg_data.schema import Sample, Task
from tg_eval.errors import EvalError
from tg_eval.predictions import PredictionSet
from tg_eval.result import EvalResult, Unit, ratio

IOU_THRESHOLD = 0.5

#: The 8 RefCOCO-family splits in the order papers print them.
REFCOCO_SPLITS: tuple[str, ...] = (
    "refcoco_val",
    "refcoco_testA",
    "refcoco_testB",
    "refcoco+_val",
    "refcoco+_testA",
    "refcoco+_testB",
    "refcocog_val",
    "refcocog_test",
)


@dataclass(frozen=True)
class RecTarget:
    id: str
    box: Box
    width: int
    height: int
    split: str


def split_label(sample: Sample, default: str = "all") -> str:
    """``meta["split"]``, qualified by its dataset (``meta["dataset"]``, else ``source``) unless it
    already names it: ``refcoco+`` / ``testA`` -> ``refcoco+_testA``; ``default`` without a split."""
    split = sample.meta.get("split")
    if not split:
        return default
    split = str(split)
    dataset = str(sample.meta.get("dataset") or sample.source or "")
    if dataset and not split.startswith(dataset):
        return f"{dataset}_{split}"
    return split


def rec_targets(samples: Iterable[Sample], default_split: str = "all") -> list[RecTarget]:
    """The REC samples' targets: ``objects[0]`` of each ``rec`` sample, grouped by ``split_label``."""
    out = []
    for s in samples:
        if s.task != Task.REC:
            continue
        if not s.objects:
            raise EvalError(f"REC sample {s.id!r} has no objects; its first object must be the target box")
        if s.size is None:
            raise EvalError(
                f"REC sample {s.id!r} has no width/height; IoU is measured in original-image pixels, "
                "so the ground truth must carry the image size"
            )
        w, h = s.size
        out.append(RecTarget(s.id, s.objects[0].box, w, h, split_label(s, default_split)))
    return out


def _clip(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def pixel_iou(pred: Box, target: Box, width: int, height: int) -> float:
    """IoU of two padded-square boxes, measured on the original image after clipping to it."""
    a = _clip(pred.to_pixels(width, height), width, height)
    b = _clip(target.to_pixels(width, height), width, height)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _split_order(splits: Iterable[str]) -> list[str]:
    known = [s for s in REFCOCO_SPLITS if s in splits]
    return known + sorted(s for s in splits if s not in REFCOCO_SPLITS)


def score_rec(
    targets: list[RecTarget],
    predictions: PredictionSet,
    name: str = "predictions",
    threshold: float = IOU_THRESHOLD,
) -> EvalResult:
    """Accuracy per split (and over all targets) at IoU >= ``threshold``."""
    if not targets:
        raise EvalError("no REC targets to score: the ground truth holds no samples with task 'rec'")
    stats: dict[str, Counter[str]] = {}
    per_item: list[dict[str, object]] = []
    target_ids = set()
    for t in targets:
        target_ids.add(t.id)
        c = stats.setdefault(t.split, Counter())
        c["n"] += 1
        text = predictions.text(t.id)
        if text is None:
            c["missing"] += 1
            continue
        box = parse_box(text)
        if box is None:
            c["unparseable"] += 1
            if len(per_item) < 20:
                per_item.append({"id": t.id, "text": text[:200], "why": "no valid box"})
            continue
        if pixel_iou(box, t.box, t.width, t.height) >= threshold:
            c["correct"] += 1
    unmatched = sorted(set(predictions.by_id) - target_ids)
    rows: dict[str, dict[str, float | int]] = {}
    for split in _split_order(stats):
        c = stats[split]
        rows[split] = {
            "acc": ratio(c["correct"], c["n"]),
            "n": c["n"],
            "correct": c["correct"],
            "unparseable": c["unparseable"],
            "missing": c["missing"],
        }
    total = sum(stats.values(), Counter())
    if len(rows) > 1:
        rows["all"] = {
            "acc": ratio(total["correct"], total["n"]),
            "n": total["n"],
            "correct": total["correct"],
            "unparseable": total["unparseable"],
            "missing": total["missing"],
        }
    notes = []
    if total["unparseable"]:
        notes.append(f"{total['unparseable']} answer(s) hold no valid box and count as wrong")
    if total["missing"]:
        notes.append(f"{total['missing']} target(s) have no prediction and count as wrong")
    if unmatched:
        notes.append(f"{len(unmatched)} prediction(s) match no target id and were not scored (e.g. {unmatched[:3]})")
    if predictions.duplicates:
        notes.append(f"{len(predictions.duplicates)} repeated prediction id(s); the first of each was scored")
    return EvalResult(
        benchmark="rec",
        name=name,
        units={"acc": Unit.PERCENT, "n": Unit.COUNT, "correct": Unit.COUNT, "unparseable": Unit.COUNT,
               "missing": Unit.COUNT, **dict.fromkeys(rows, Unit.PERCENT)},
        rows=rows,
        summary={split: rows[split]["acc"] for split in rows},
        counts={
            "targets": total["n"],
            "unparseable": total["unparseable"],
            "missing": total["missing"],
            "unmatched_predictions": len(unmatched),
            "duplicate_predictions": len(predictions.duplicates),
        },
        notes=notes,
        details={"unparseable_examples": per_item},
    )
