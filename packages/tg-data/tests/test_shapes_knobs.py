"""Shapes-world knobs the quickstart uses: shape size ranges and multi-round REC."""

from __future__ import annotations

import numpy as np
import pytest

from tg_data.coords import parse_box, render_box
from tg_data.schema import IMAGE_TOKEN
from tg_data.shapes import ShapesConfig, TaskMix, denote, scene_samples, split_scenes
from tg_data.shapes.language import Expr


def test_size_ranges_set_the_side_of_every_shape() -> None:
    ranges = {"small": (0.3, 0.32), "medium": (0.4, 0.42), "large": (0.5, 0.52)}
    config = ShapesConfig(image_size=100, aspect=(1.0, 1.0), max_shapes=2, size_ranges=ranges)
    for scene in split_scenes("train", 30, 0, config):
        for shape in scene.shapes:
            lo, hi = ranges[shape.size]
            side = shape.px[3] - shape.px[1]  # heights are exactly the drawn side
            assert lo * 100 - 0.02 <= side <= hi * 100 + 0.02


@pytest.mark.parametrize("bad", [(0.0, 0.2), (0.3, 0.2), (0.5, 1.5)])
def test_bad_size_range_is_refused(bad: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="size_ranges"):
        ShapesConfig(size_ranges={"small": bad, "medium": (0.2, 0.3), "large": (0.3, 0.4)})


def test_multi_round_rec_asks_each_object_once_with_the_image_first() -> None:
    config = ShapesConfig(min_shapes=3, max_shapes=5)
    mix = TaskMix({"rec": 2}, rec_rounds=4)
    checked = 0
    for k, scene in enumerate(split_scenes("train", 20, 3, config)):
        for s in scene_samples(scene, "x.png", np.random.default_rng(k), config, mix):
            users = [t for t in s.turns if t.role == "user"]
            answers = [t.text for t in s.turns if t.role == "assistant"]
            assert len(users) == len(answers) == s.meta["rounds"] == min(4, len(scene.shapes))
            assert users[0].text.startswith(IMAGE_TOKEN) and all(IMAGE_TOKEN not in u.text for u in users[1:])
            assert len(set(s.meta["target"])) == len(s.meta["target"])  # no object asked twice
            for target, expr, answer, obj in zip(s.meta["target"], s.meta["expression"], answers, s.objects, strict=True):
                assert denote(scene, Expr.from_dict(expr)) == {target}
                assert answer == render_box(scene.box(target)) == render_box(obj.box)
                assert parse_box(answer) is not None
            checked += 1
    assert checked == 40


def test_single_round_rec_is_unchanged_by_default() -> None:
    config = ShapesConfig()
    scene = next(iter(split_scenes("test", 1, 0, config)))
    samples = scene_samples(scene, "x.png", np.random.default_rng(0), config, TaskMix({"rec": 3}))
    assert all(len(s.turns) == 2 and "rounds" not in s.meta for s in samples)
