"""POPE sampling over shapes scenes, checked against the POPE paper's definitions (Li et al., 2023):
per image, k ground-truth objects get "yes" questions and k absent objects get "no" questions; the
absent objects are uniform (random), the most frequent in the dataset (popular), or those that
co-occur most with the image's objects (adversarial)."""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import permutations
from pathlib import Path

import pytest

from tg_data.io import read_samples
from tg_data.readers.pope import pope_object
from tg_data.shapes import POPE_CATEGORIES, Scene, Shape, pope_samples, split_scenes
from tg_data.shapes.scene import ShapesConfig


def _scene(sid: str, names: list[str]) -> Scene:
    shapes = []
    for k, name in enumerate(names):
        colour, kind = name.split()
        shapes.append(Shape(kind, colour, "small", (k * 30.0, 0.0, k * 30.0 + 20, 20.0)))
    return Scene(sid, 300, 300, "white", False, 0, tuple(shapes))


# a dataset whose frequencies and co-occurrences are easy to read off
HAND = [
    ["red circle", "blue square", "green star"],
    ["red circle", "blue square", "yellow diamond"],
    ["red circle", "blue square", "purple hexagon"],
    ["red circle", "orange triangle", "green star"],
    ["blue square", "orange triangle", "yellow diamond"],
    ["green star", "purple hexagon", "orange triangle"],
    ["red circle", "yellow diamond", "purple hexagon"],
]
VOCAB = sorted({o for objs in HAND for o in objs} | {"red star", "blue circle"})


def _by_scene(samples: list) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = defaultdict(list)
    for s in samples:
        out[(s.meta["scene"], s.meta["category"])].append(s)
    return out


@pytest.fixture(scope="module")
def hand_questions() -> tuple[list[Scene], list]:
    scenes = [_scene(f"s{k}", names) for k, names in enumerate(HAND)]
    return scenes, pope_samples(scenes, [f"{s.id}.png" for s in scenes], seed=0, per_image=2, vocabulary=VOCAB)


def test_every_image_gets_balanced_questions_in_every_setting(hand_questions: tuple[list[Scene], list]) -> None:
    scenes, samples = hand_questions
    groups = _by_scene(samples)
    assert set(groups) == {(s.id, c) for s in scenes for c in POPE_CATEGORIES}
    for (sid, _), qs in groups.items():
        present = set(HAND[int(sid[1:])])
        labels = Counter(q.meta["label"] for q in qs)
        assert labels == {"yes": 2, "no": 2}
        for q in qs:
            asked = q.meta["object"]
            assert pope_object(q.turns[0].text) == asked  # the question asks about the object it names
            assert q.turns[1].text == q.meta["label"].capitalize()
            assert (asked in present) == (q.meta["label"] == "yes")
    assert len({s.id for s in samples}) == len(samples)


def test_popular_negatives_are_the_most_frequent_absent_objects(hand_questions: tuple[list[Scene], list]) -> None:
    _, samples = hand_questions
    frequency = Counter(o for objs in HAND for o in objs)
    for (sid, category), qs in _by_scene(samples).items():
        if category != "popular":
            continue
        absent = [o for o in VOCAB if o not in HAND[int(sid[1:])]]
        chosen = {q.meta["object"] for q in qs if q.meta["label"] == "no"}
        others = set(absent) - chosen
        assert min(frequency[o] for o in chosen) >= max(frequency[o] for o in others)


def test_adversarial_negatives_co_occur_most_with_the_image_objects(hand_questions: tuple[list[Scene], list]) -> None:
    _, samples = hand_questions
    cooccur: Counter[tuple[str, str]] = Counter()
    for objs in HAND:
        for a, b in permutations(objs, 2):
            cooccur[(a, b)] += 1
    for (sid, category), qs in _by_scene(samples).items():
        if category != "adversarial":
            continue
        present = HAND[int(sid[1:])]
        score = {o: sum(cooccur[(p, o)] for p in present) for o in VOCAB if o not in present}
        chosen = {q.meta["object"] for q in qs if q.meta["label"] == "no"}
        assert min(score[o] for o in chosen) >= max(score[o] for o in set(score) - chosen)


def test_popular_and_adversarial_pick_different_objects_where_the_definitions_differ() -> None:
    # worked by hand: "green star" is the most frequent object but never appears with the target
    # scene's objects; "yellow diamond" is rarer but appears with both of them
    rows = [
        ["red circle", "blue square"],  # the target scene
        ["green star", "purple hexagon"],
        ["green star", "orange triangle"],
        ["green star", "red star"],
        ["red circle", "yellow diamond"],
        ["blue square", "yellow diamond"],
    ]
    scenes = [_scene(f"s{k}", names) for k, names in enumerate(rows)]
    vocab = sorted({o for r in rows for o in r})
    samples = pope_samples(scenes, [f"{s.id}.png" for s in scenes], seed=0, per_image=1, vocabulary=vocab)
    negatives = {
        q.meta["category"]: q.meta["object"] for q in samples if q.meta["scene"] == "s0" and q.meta["label"] == "no"
    }
    assert negatives["popular"] == "green star"
    assert negatives["adversarial"] == "yellow diamond"
    assert negatives["random"] not in rows[0]


def test_random_negatives_are_absent_and_spread_over_the_vocabulary() -> None:
    config = ShapesConfig(min_shapes=3, max_shapes=5)
    scenes = list(split_scenes("val", 80, 0, config))
    vocab = [f"{c} {k}" for c in config.colours for k in config.kinds]
    samples = pope_samples(scenes, [f"{s.id}.png" for s in scenes], seed=1, vocabulary=vocab)
    present = {s.id: {sh.name for sh in s.shapes} for s in scenes}
    negatives: dict[str, set[str]] = defaultdict(set)
    for q in samples:
        if q.meta["label"] == "no":
            assert q.meta["object"] not in present[q.meta["scene"]]
            negatives[q.meta["category"]].add(q.meta["object"])
    # uniform draws reach most of the vocabulary; the most frequent objects are only a few
    assert len(negatives["random"]) > 25
    assert len(negatives["popular"]) < len(negatives["random"]) / 2


def test_written_pope_splits_are_balanced(shapes_dir: Path) -> None:
    for split in ("val", "test"):
        labels = Counter(
            (s.meta["category"], s.meta["label"]) for s in read_samples(str(shapes_dir / f"{split}.parquet")) if s.task == "pope"
        )
        for category in POPE_CATEGORIES:
            assert labels[(category, "yes")] == labels[(category, "no")] > 0
