"""The question swap: does a model's answer follow its question, or a shape it favours in the image?"""

from __future__ import annotations

import numpy as np
import pytest

from tg_data.box import Box
from tg_data.coords import render_box
from tg_data.prompts import REC_PROMPT
from tg_data.schema import Task
from tg_data.shapes import ShapesConfig, TaskMix, candidate_expressions, generate_scene
from tg_data.shapes.tasks import scene_samples
from tg_eval.predictions import PredictionSet
from tg_train.question_swap import landed_shape, swap_agreement, swapped_questions


@pytest.fixture(scope="module")
def world():
    config = ShapesConfig(image_size=96, min_shapes=1, max_shapes=4)
    rng = np.random.default_rng(3)
    scenes = {sc.id: sc for sc in (generate_scene(f"test-{i:06d}", rng, config) for i in range(40))}
    mix = TaskMix(counts={Task.REC: 2})
    samples = [s for sc in scenes.values() for s in scene_samples(sc, f"images/{sc.id}.png", rng, config, mix)]
    return scenes, samples


def _answers(samples, box_of) -> PredictionSet:
    return PredictionSet.from_records([{"id": s.id, "text": box_of(s)} for s in samples], source="test")


def test_each_several_shape_question_is_asked_again_about_another_shape(world):
    scenes, samples = world
    swaps = swapped_questions(samples, scenes)
    several = [s for s in samples if len(scenes[s.meta["scene"]].shapes) > 1]
    assert 0 < len(several) < len(samples)  # the world has one-shape scenes too: they are not swapped
    assert [w.meta["swapped_from"] for w in swaps] == [s.id for s in several]
    by_id = {s.id: s for s in samples}
    for swap in swaps:
        original, scene = by_id[swap.meta["swapped_from"]], scenes[swap.meta["scene"]]
        other = swap.meta["target"]
        assert other != original.meta["target"] and 0 <= other < len(scene.shapes)
        assert swap.image == original.image and swap.id != original.id
        assert swap.objects[0].box == scene.box(other) and swap.turns[1].text == render_box(scene.box(other))
        # the question names the other shape unambiguously (the language's own check)
        names = {e.text() for e in candidate_expressions(scene, other) if e.relation is None}
        asked = swap.turns[0].text.split("\n", 1)[1]
        assert asked in {REC_PROMPT.format(expression=n) for n in names}
    assert [w.turns for w in swapped_questions(samples, scenes)] == [w.turns for w in swaps]  # seeded


def test_agreement_tells_grounding_from_a_favourite_shape(world):
    scenes, samples = world
    swaps = swapped_questions(samples, scenes)

    def asked_for(s):
        return render_box(scenes[s.meta["scene"]].box(s.meta["target"]))

    def favourite(s):
        return render_box(scenes[s.meta["scene"]].box(0))

    grounded = swap_agreement(samples, swaps, scenes, _answers(samples, asked_for), _answers(swaps, asked_for))
    assert grounded == {"pairs": len(swaps), "both_asked_for": len(swaps), "same_shape": 0}

    fixed = swap_agreement(samples, swaps, scenes, _answers(samples, favourite), _answers(swaps, favourite))
    assert fixed == {"pairs": len(swaps), "both_asked_for": 0, "same_shape": len(swaps)}

    # answers that land on no shape (or do not parse) count as neither
    garbled = swap_agreement(samples, swaps, scenes, _answers(samples, lambda s: "[0.0,0.0,0.01,0.01]"),
                             _answers(swaps, lambda s: "a box"))
    assert garbled == {"pairs": len(swaps), "both_asked_for": 0, "same_shape": 0}


def test_an_answer_lands_on_the_shape_it_overlaps_enough(world):
    scenes, _ = world
    scene = next(sc for sc in scenes.values() if len(sc.shapes) > 1)
    box = scene.box(1)
    assert landed_shape(box, scene, 0.5) == 1
    x1, y1, x2, y2 = box.to_list()

    def shifted(fraction: float) -> Box:  # the box moved sideways by a fraction of its width
        dx = fraction * (x2 - x1) * (1 if x2 + fraction * (x2 - x1) <= 1 else -1)
        return Box(x1 + dx, y1, x2 + dx, y2)

    assert landed_shape(shifted(0.1), scene, 0.5) == 1  # IoU 0.82
    assert landed_shape(shifted(0.6), scene, 0.5) != 1  # IoU 0.25
    assert landed_shape(None, scene, 0.5) is None


def test_a_world_of_one_shape_scenes_has_nothing_to_swap(world, tmp_path):
    from tg_train.quickstart import question_swap

    scenes, samples = world
    lone = [s for s in samples if len(scenes[s.meta["scene"]].shapes) == 1]
    out = tmp_path / "swap.jsonl"
    # no question to ask again, so no model is asked and no answers are looked at (none are given)
    assert question_swap(None, lone, scenes, None, None, out) == {
        "pairs": 0, "both_asked_for": 0, "same_shape": 0}
    assert not out.exists()
