"""Does an answer follow its question? Ask about another shape of the same scene and compare.

Acc@0.5 alone cannot tell a model that grounds the question from one that finds, in each image, a
shape it favours: with two to four shapes a scene the latter still scores a third of the questions
about several shapes. Asking each such question again, about another shape of the same scene,
separates the two: a grounding model moves its box to the newly named shape; a model that ignores
the question answers the same shape twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from tg_data.box import Box
from tg_data.coords import parse_box, render_box
from tg_data.prompts import REC_PROMPT
from tg_data.schema import IMAGE_TOKEN, ObjectRef, Sample, Show, Turn
from tg_data.shapes.language import candidate_expressions
from tg_data.shapes.scene import Scene
from tg_eval.rec import pixel_iou

SWAP_SUFFIX = "#swap"


def swapped_questions(samples: list[Sample], scenes: dict[str, Scene], seed: int = 0) -> list[Sample]:
    """For every REC question about a scene of several shapes, the same image asked about another shape.

    The other shape is drawn at random (seeded) and named by its simplest unambiguous expression
    without a relation (a relation's meaning depends on the world's thresholds, not needed here).
    """
    rng = np.random.default_rng(seed)
    out = []
    for sample in samples:
        scene = scenes[sample.meta["scene"]]
        target = sample.meta["target"]
        if len(scene.shapes) < 2 or not isinstance(target, int):
            continue
        other = int(rng.choice([i for i in range(len(scene.shapes)) if i != target]))
        expr = next(e for e in candidate_expressions(scene, other) if e.relation is None)
        turns = [Turn("user", f"{IMAGE_TOKEN}\n{REC_PROMPT.format(expression=expr.text())}"),
                 Turn("assistant", render_box(scene.box(other)))]
        out.append(replace(
            sample, id=sample.id + SWAP_SUFFIX, turns=turns,
            objects=[ObjectRef(scene.box(other), Show.COORD.value, label=expr.text())],
            meta={**sample.meta, "target": other, "swapped_from": sample.id},
        ))
    return out


def landed_shape(box: Box | None, scene: Scene, iou_threshold: float) -> int | None:
    """The scene's shape an answer's box finds at ``iou_threshold`` (pixel IoU), or None.

    Shapes of a scene never overlap, so at most one can meet a threshold of 0.5 or more.
    """
    if box is None:
        return None
    ious = [pixel_iou(box, b, scene.width, scene.height) for b in scene.boxes]
    best = max(range(len(ious)), key=ious.__getitem__)
    return best if ious[best] >= iou_threshold else None


def swap_agreement(
    samples: list[Sample], swaps: list[Sample], scenes: dict[str, Scene], answers: Any, swap_answers: Any,
    iou_threshold: float = 0.5,
) -> dict[str, int]:
    """Counts over question pairs: both answers on their asked-for shapes, or both on one shape.

    ``answers`` and ``swap_answers`` give the answer text of an original and of a swapped question
    by id (``.text(id)``, as a ``PredictionSet`` does).
    """
    by_id = {s.id: s for s in samples}
    pairs = both_asked_for = same_shape = 0
    for swap in swaps:
        original = by_id[swap.meta["swapped_from"]]
        scene = scenes[swap.meta["scene"]]
        first = landed_shape(parse_box(answers.text(original.id) or ""), scene, iou_threshold)
        second = landed_shape(parse_box(swap_answers.text(swap.id) or ""), scene, iou_threshold)
        pairs += 1
        both_asked_for += first == original.meta["target"] and second == swap.meta["target"]
        same_shape += first is not None and first == second
    return {"pairs": pairs, "both_asked_for": both_asked_for, "same_shape": same_shape}
