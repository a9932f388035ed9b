"""Writing a shapes-world dataset: images, scene truth, samples per split, and a manifest.

Layout of ``OUT``::

    manifest.json               config, seed, counts per split and task
    images/<split>/<id>.png     rendered scenes
    scenes/<split>.jsonl        each scene's truth (shapes, boxes, attributes) for oracles
    <split>.parquet             samples; image paths are relative to OUT

Splits are made of different scenes drawn from different seed streams, so nothing leaks.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np

from tg_data.io import write_parquet
from tg_data.schema import Sample
from tg_data.shapes.pope import pope_samples
from tg_data.shapes.render import render_scene
from tg_data.shapes.scene import COLOURS, Scene, ShapesConfig, generate_scene
from tg_data.shapes.tasks import TaskMix, scene_samples

FORMAT = "tg-shapes/1"
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_STREAM = {name: k for k, name in enumerate(SPLITS)}


def split_scenes(split: str, n: int, seed: int, config: ShapesConfig) -> Iterator[Scene]:
    """The first ``n`` scenes of a split; scene ``i`` depends only on (seed, split, i)."""
    if split not in _SPLIT_STREAM:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    for i in range(n):
        rng = np.random.default_rng([seed, _SPLIT_STREAM[split], i, 0])
        yield generate_scene(f"{split}-{i:06d}", rng, config)


def image_path(scene: Scene) -> str:
    return f"images/{scene.id.split('-')[0]}/{scene.id}.png"


@dataclass
class SplitCounts:
    scenes: int = 0
    samples: int = 0
    tasks: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"scenes": self.scenes, "samples": self.samples, "tasks": dict(sorted(self.tasks.items()))}


def _split_samples(
    fs: Any,
    root: str,
    split: str,
    scenes: Iterable[Scene],
    seed: int,
    config: ShapesConfig,
    mix: TaskMix | None,
    pope_vocabulary: list[str] | None,
    written: list[Scene],
) -> Iterator[Sample]:
    """Render and describe scene after scene (appending each to ``written``); POPE comes last, as
    its popular and adversarial negatives need the objects of every scene."""
    with fs.open(f"{root}/scenes/{split}.jsonl", "w") as truth:
        for scene in scenes:
            buf = io.BytesIO()
            render_scene(scene).save(buf, format="PNG", compress_level=1)
            with fs.open(f"{root}/{image_path(scene)}", "wb") as f:
                f.write(buf.getvalue())
            truth.write(json.dumps(scene.to_dict()) + "\n")
            rng = np.random.default_rng([seed, _SPLIT_STREAM[split], int(scene.id.split("-")[1]), 1])
            yield from scene_samples(scene, image_path(scene), rng, config, mix)
            written.append(scene)
    if pope_vocabulary is not None:
        yield from pope_samples(
            written,
            [image_path(s) for s in written],
            seed + 7919 * (1 + _SPLIT_STREAM[split]),
            vocabulary=pope_vocabulary,
        )


def _counted(samples: Iterable[Sample], counts: SplitCounts) -> Iterator[Sample]:
    for s in samples:
        counts.tasks[s.task] += 1
        yield s


def write_shapes_dataset(
    out: str,
    scenes: dict[str, int],
    seed: int = 0,
    config: ShapesConfig | None = None,
    mix: TaskMix | None = None,
    pope_splits: tuple[str, ...] = ("val", "test"),
    progress: bool = False,
    split_mixes: dict[str, TaskMix] | None = None,
) -> dict[str, Any]:
    """Render and write a dataset; returns the manifest (also written to ``OUT/manifest.json``).

    ``split_mixes`` gives some splits their own task mix (e.g. multi-round REC for training only).

    Streams: images and samples go to disk scene by scene, so memory holds only the scene truth.
    """
    config = config or ShapesConfig()
    fs, root = fsspec.core.url_to_fs(out)
    fs.makedirs(root, exist_ok=True)
    counts: dict[str, SplitCounts] = {}
    vocabulary = [f"{c} {k}" for c in config.colours for k in config.kinds]
    for split, n in scenes.items():
        if n <= 0:
            continue
        fs.makedirs(f"{root}/images/{split}", exist_ok=True)
        fs.makedirs(f"{root}/scenes", exist_ok=True)
        c = counts[split] = SplitCounts()
        iterator: Iterable[Scene] = split_scenes(split, n, seed, config)
        if progress:
            from rich.progress import track

            iterator = track(iterator, total=n, description=f"shapes {split}")
        written: list[Scene] = []
        samples = _split_samples(
            fs, root, split, iterator, seed, config, (split_mixes or {}).get(split, mix),
            vocabulary if split in pope_splits else None, written,
        )
        c.samples = write_parquet(_counted(samples, c), f"{out.rstrip('/')}/{split}.parquet")
        c.scenes = len(written)
    manifest = {
        "format": FORMAT,
        "seed": seed,
        "config": config.to_dict(),
        "colours": {k: list(v) for k, v in COLOURS.items() if k in config.colours},
        "splits": {k: v.to_dict() for k, v in counts.items()},
    }
    with fs.open(f"{root}/manifest.json", "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def read_manifest(root: str) -> dict[str, Any]:
    fs, p = fsspec.core.url_to_fs(root)
    path = f"{p.rstrip('/')}/manifest.json"
    if not fs.exists(path):
        raise FileNotFoundError(f"{root}: no manifest.json here; is this a shapes dataset (tg-data shapes --out DIR)?")
    with fs.open(path, "r") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{root}/manifest.json: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def load_scenes(root: str, split: str) -> list[Scene]:
    """The scene truth of a written split (for oracle backends and evaluation)."""
    fs, p = fsspec.core.url_to_fs(root)
    with fs.open(f"{p.rstrip('/')}/scenes/{split}.jsonl", "r") as f:
        return [Scene.from_dict(json.loads(line)) for line in f if line.strip()]
