"""POPE-style object-existence questions over shapes-world scenes.

As in the POPE paper (Li et al., 2023): for each image, ground-truth objects give "yes" questions
and as many absent objects give "no" questions; absent objects are drawn uniformly (random), from
the most frequent objects of the dataset (popular), or from the objects that co-occur most with
the image's own (adversarial). An object here is a colour + kind, e.g. "red circle".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from tg_data.schema import IMAGE_TOKEN, Sample, Task, Turn
from tg_data.shapes.scene import Scene

POPE_CATEGORIES = ("random", "popular", "adversarial")
POPE_PROMPT = "Is there a {object} in the image?"


def _objects(scene: Scene) -> list[str]:
    return sorted({s.name for s in scene.shapes})


def pope_samples(
    scenes: Sequence[Scene],
    images: Sequence[str],
    seed: int,
    per_image: int = 3,
    vocabulary: Sequence[str] | None = None,
) -> list[Sample]:
    """Balanced yes/no questions for every scene in all three sampling settings."""
    rng = np.random.default_rng(seed)
    present = [_objects(s) for s in scenes]
    frequency = Counter(o for objs in present for o in objs)
    cooccur: Counter[tuple[str, str]] = Counter()
    for objs in present:
        for a, b in combinations(objs, 2):
            cooccur[(a, b)] += 1
            cooccur[(b, a)] += 1
    vocab = sorted(set(vocabulary) if vocabulary is not None else set(frequency))
    by_frequency = sorted(vocab, key=lambda o: (-frequency[o], o))
    out: list[Sample] = []
    for scene, image, objs in zip(scenes, images, present, strict=True):
        if not objs:
            continue
        k = min(per_image, len(objs))
        yes = [objs[int(i)] for i in rng.choice(len(objs), size=k, replace=False)]
        absent = [o for o in vocab if o not in objs]
        for category in POPE_CATEGORIES:
            if category == "random":
                no = [absent[int(i)] for i in rng.choice(len(absent), size=min(k, len(absent)), replace=False)]
            elif category == "popular":
                no = [o for o in by_frequency if o not in objs][:k]
            else:
                score = {o: sum(cooccur[(g, o)] for g in objs) for o in absent}
                no = sorted(absent, key=lambda o: (-score[o], -frequency[o], o))[:k]
            questions = [(o, "yes") for o in yes] + [(o, "no") for o in no]
            for n, (obj, label) in enumerate(questions):
                out.append(
                    Sample(
                        id=f"{scene.id}-pope-{category}-{n}",
                        image=image,
                        width=scene.width,
                        height=scene.height,
                        task=Task.POPE.value,
                        source="shapes",
                        turns=[
                            Turn("user", f"{IMAGE_TOKEN}\n{POPE_PROMPT.format(object=obj)}"),
                            Turn("assistant", label.capitalize()),
                        ],
                        meta={"scene": scene.id, "stage": 0, "category": category, "label": label, "object": obj},
                    )
                )
    return out
