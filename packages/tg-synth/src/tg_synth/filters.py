"""The filters of steps 2 and 5, as plain functions; every item they remove is counted by reason.

Step 2 turns listed objects and detections into the object -> boxes dictionary S1: low-confidence
boxes go, existing annotations replace the detections they match, duplicate boxes collapse, an object
with too many boxes (usually a generic or plural label) goes, and a listed object left without any
box was never confirmed. Step 5 keeps object images that are neither tiny nor nearly the whole
picture, and keeps the object images offered as options of one question apart from each other.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

from tg_data.box import Box
from tg_synth.config import FilterConfig, GroundingConfig
from tg_synth.records import Annotation, Detection, Instance


class FilterReport:
    """Counts of filtered items by reason (``area.reason``), plus counts of merges."""

    def __init__(self) -> None:
        self.filtered: Counter[str] = Counter()
        self.merged: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        if n:
            self.filtered[reason] += n

    def update(self, counts: dict[str, int]) -> None:
        for reason, n in counts.items():
            self.add(reason, n)

    def to_dict(self) -> dict[str, int]:
        return dict(sorted(self.filtered.items()))


# step 2: S1 ---------------------------------------------------------------------------------------
def ground_objects(
    labels: Sequence[str],
    detections: Iterable[Detection],
    annotations: Sequence[Annotation],
    cfg: GroundingConfig,
    report: FilterReport,
) -> list[Instance]:
    """The grounded instances of one image (ids 1..N, ordered left to right, then top to bottom)."""
    wanted = set(labels)
    confident: list[Detection] = []
    for d in detections:
        if d.label not in wanted:
            report.add("grounding.unknown_label")
        elif d.score < cfg.min_confidence:
            report.add("grounding.low_confidence")
        else:
            confident.append(d)

    per_label = Counter(d.label for d in confident)
    crowded = {label for label, n in per_label.items() if n > cfg.max_boxes_per_object}
    report.add("grounding.too_many_boxes", len(crowded))  # objects dropped, whatever their box counts
    confident = [d for d in confident if d.label not in crowded]

    # existing annotations are truth: a detection of the same label on the same spot is that annotation
    candidates: list[tuple[int, float, str, Box, str]] = []  # (priority, score, label, box, source)
    for a in annotations:
        candidates.append((0, 1.0, a.label, a.box, a.source))
    for d in confident:
        if any(a.label == d.label and a.box.iou(d.box) >= cfg.annotation_iou for a in annotations):
            report.merged["detection_matched_annotation"] += 1
            continue
        candidates.append((1, d.score, d.label, d.box, "detector"))

    kept: list[tuple[float, str, Box, str]] = []
    for _prio, score, label, box, source in sorted(candidates, key=lambda c: (c[0], -c[1], c[2], c[3].to_list())):
        if any(box.iou(k[2]) >= cfg.duplicate_iou for k in kept):
            report.add("grounding.duplicate_box")
            continue
        kept.append((score, label, box, source))

    found = {label for _, label, _, _ in kept} | crowded
    had_confident = {d.label for d in confident} | crowded
    for label in labels:
        if label not in found and label not in had_confident:
            report.add("grounding.unconfirmed")

    kept.sort(key=lambda k: (k[2].x1, k[2].y1, k[1]))
    return [Instance(i + 1, label, box, score, source) for i, (score, label, box, source) in enumerate(kept)]


def s1_dictionary(instances: Sequence[Instance]) -> dict[str, list[list[float]]]:
    """The paper's S1: object name -> its boxes."""
    out: dict[str, list[list[float]]] = {}
    for inst in instances:
        out.setdefault(inst.label, []).append(inst.box.to_list())
    return out


# step 5: object images and options ----------------------------------------------------------------
def object_area_fraction(box: Box, width: int, height: int) -> float:
    """The share of the original image's area that the box covers (padding excluded)."""
    on_image = box.clip_to_image(width, height)
    x1, y1, x2, y2 = on_image.to_pixels(width, height)
    return max(0.0, x2 - x1) * max(0.0, y2 - y1) / (width * height)


def object_image_problem(box: Box, width: int, height: int, cfg: FilterConfig) -> str | None:
    """Why this box makes a poor object image, or ``None`` when it is fine."""
    try:
        area = object_area_fraction(box, width, height)
    except ValueError:
        return "object_image.off_image"
    if area < cfg.min_object_area:
        return "object_image.too_small"
    if area > cfg.max_object_area:
        return "object_image.too_large"
    return None


def usable_object_images(
    instances: Sequence[Instance], width: int, height: int, cfg: FilterConfig, report: FilterReport
) -> list[Instance]:
    out = []
    for inst in instances:
        problem = object_image_problem(inst.box, width, height, cfg)
        if problem is None:
            out.append(inst)
        else:
            report.add(problem)
    return out


def choose_options(
    target: Instance,
    pool: Sequence[Instance],
    max_options: int,
    max_iou: float,
    rng: random.Random,
    report: FilterReport,
) -> list[Instance] | None:
    """The target plus distractors whose boxes overlap no other option above ``max_iou``, shuffled.

    ``None`` (counted as ``options.too_few``) when fewer than two options remain.
    """
    distractors = [p for p in pool if p.id != target.id]
    rng.shuffle(distractors)
    chosen = [target]
    for d in distractors:
        if len(chosen) >= max_options:
            break
        if any(d.box.iou(c.box) > max_iou for c in chosen):
            report.add("options.overlap")
            continue
        chosen.append(d)
    if len(chosen) < 2:
        report.add("options.too_few")
        return None
    rng.shuffle(chosen)
    return chosen
