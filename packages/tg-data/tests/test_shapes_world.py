from __future__ import annotations

import hashlib
import string
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from tg_data.coords import parse_boxes, render_box
from tg_data.io import read_samples
from tg_data.schema import Show, Task
from tg_data.shapes import (
    KINDS,
    Expr,
    Scene,
    Shape,
    ShapesConfig,
    TaskMix,
    candidate_expressions,
    denote,
    generate_scene,
    load_scenes,
    read_manifest,
    render_scene,
    scene_samples,
    split_scenes,
    write_shapes_dataset,
)
from tg_data.shapes.scene import relation_holds

CONFIG = ShapesConfig()
SHAPES_TASKS = {t.value for t in Task} - {Task.VQA.value}


def _scenes(n: int, seed: int = 0, config: ShapesConfig = CONFIG) -> list[Scene]:
    return list(split_scenes("train", n, seed, config))


# determinism --------------------------------------------------------------------------------------
def test_same_seed_writes_the_same_dataset(tmp_path: Path) -> None:
    scenes = {"train": 6, "val": 3}
    for name in ("a", "b"):
        write_shapes_dataset(str(tmp_path / name), scenes, seed=5)
    write_shapes_dataset(str(tmp_path / "c"), scenes, seed=6)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        if f.suffix == ".parquet":
            assert pl.read_parquet(a / f).equals(pl.read_parquet(b / f))
        else:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "scenes/train.jsonl").read_text() != (c / "scenes/train.jsonl").read_text()


def test_a_scene_depends_only_on_its_rng() -> None:
    one = generate_scene("x", np.random.default_rng(7), CONFIG)
    two = generate_scene("x", np.random.default_rng(7), CONFIG)
    assert one == two
    assert one != generate_scene("x", np.random.default_rng(8), CONFIG)
    assert Scene.from_dict(one.to_dict()) == one


def test_scene_i_does_not_depend_on_how_many_are_drawn() -> None:
    assert _scenes(5)[3] == _scenes(12)[3]


# geometry -----------------------------------------------------------------------------------------
def _ink(scene: Scene, shape: Shape) -> np.ndarray:
    """Pixels that drawing ``shape`` alone changes on the scene's own background."""
    background = np.asarray(render_scene(replace(scene, shapes=())), dtype=np.int16)
    alone = np.asarray(render_scene(replace(scene, shapes=(shape,))), dtype=np.int16)
    return np.abs(alone - background).sum(axis=2) > 0


def test_shape_pixels_lie_inside_their_box_and_touch_its_edges() -> None:
    kinds_seen = set()
    for scene in _scenes(40, seed=1):
        for i, shape in enumerate(scene.shapes):
            kinds_seen.add(shape.kind)
            ys, xs = np.nonzero(_ink(scene, shape))
            assert len(xs) > 0
            x1, y1, x2, y2 = shape.px
            # pixel column c covers [c, c + 1): inside means c >= floor(x1) and c + 1 <= ceil(x2)
            assert xs.min() >= np.floor(x1) and xs.max() + 1 <= np.ceil(x2), (scene.id, shape)
            assert ys.min() >= np.floor(y1) and ys.max() + 1 <= np.ceil(y2), (scene.id, shape)
            # tight: the ink reaches each edge of the box within a pixel and a half
            assert xs.min() <= x1 + 1.5 and xs.max() + 1 >= x2 - 1.5, (scene.id, shape)
            assert ys.min() <= y1 + 1.5 and ys.max() + 1 >= y2 - 1.5, (scene.id, shape)
            # and the box in the project's frame is the same box
            assert scene.box(i).to_pixels(scene.width, scene.height) == pytest.approx(shape.px)
    assert kinds_seen == set(KINDS)


def test_the_image_is_the_union_of_its_shapes() -> None:
    for scene in _scenes(15, seed=2):
        background = np.asarray(render_scene(replace(scene, shapes=())), dtype=np.int16)
        full = np.asarray(render_scene(scene), dtype=np.int16)
        changed = np.abs(full - background).sum(axis=2) > 0
        masks = [_ink(scene, s) for s in scene.shapes]
        assert (changed == np.logical_or.reduce(masks)).all() if masks else not changed.any()
        for a in range(len(masks)):  # no shape paints over another
            for b in range(a + 1, len(masks)):
                assert not (masks[a] & masks[b]).any()


def test_shapes_do_not_overlap_and_keep_their_gap() -> None:
    config = ShapesConfig(min_shapes=2, max_shapes=6)
    for scene in _scenes(200, seed=3, config=config):
        assert 1 <= len(scene.shapes) <= 6
        gap = config.gap * min(scene.width, scene.height)
        triples = {(s.kind, s.colour, s.size) for s in scene.shapes}
        assert len(triples) == len(scene.shapes)
        for i, a in enumerate(scene.shapes):
            assert 0 <= a.px[0] < a.px[2] <= scene.width and 0 <= a.px[1] < a.px[3] <= scene.height
            for b in scene.shapes[i + 1 :]:
                apart_x = a.px[2] + gap <= b.px[0] + 1e-9 or b.px[2] + gap <= a.px[0] + 1e-9
                apart_y = a.px[3] + gap <= b.px[1] + 1e-9 or b.px[3] + gap <= a.px[1] + 1e-9
                assert apart_x or apart_y, (scene.id, a, b)
        boxes = scene.boxes
        assert all(boxes[i].iou(boxes[j]) == 0 for i in range(len(boxes)) for j in range(i + 1, len(boxes)))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="min_shapes"):
        ShapesConfig(min_shapes=3, max_shapes=2)
    with pytest.raises(ValueError, match="kinds: unknown"):
        ShapesConfig(kinds=("circle", "blob"))
    with pytest.raises(ValueError, match="image_size"):
        ShapesConfig(image_size=8)


# referring expressions ----------------------------------------------------------------------------
def _scene(*shapes: tuple[str, str, str, tuple[float, float, float, float]]) -> Scene:
    return Scene("hand", 200, 200, "white", False, 0, tuple(Shape(k, c, s, px) for k, c, s, px in shapes))


def test_denote_sees_ambiguity() -> None:
    scene = _scene(
        ("circle", "red", "small", (10, 10, 40, 40)),
        ("circle", "red", "large", (100, 100, 180, 180)),
        ("square", "blue", "medium", (10, 120, 60, 170)),
    )
    assert denote(scene, Expr("circle", colour="red")) == {0, 1}
    assert denote(scene, Expr("circle", size="large")) == {1}
    assert denote(scene, Expr("circle", superlative="biggest")) == {1}
    assert denote(scene, Expr("circle", superlative="leftmost")) == {0}
    assert denote(scene, Expr("circle", relation="above", anchor=Expr("square"))) == {0}
    cands = candidate_expressions(scene, 0)
    assert cands and Expr("circle", colour="red") not in cands and Expr("circle") not in cands
    assert all(denote(scene, e) == {0} for e in cands)


def test_ties_and_ambiguous_anchors_are_ambiguous() -> None:
    twins = _scene(
        ("circle", "red", "small", (10, 10, 40, 40)),
        ("circle", "blue", "small", (100, 10, 130, 40)),  # same size: "the biggest circle" is a tie
        ("square", "green", "small", (50, 100, 80, 130)),
        ("square", "green", "large", (120, 100, 190, 170)),
    )
    assert denote(twins, Expr("circle", superlative="biggest")) == {0, 1}
    # "the circle above the green square": there are two green squares, so no single reading
    assert -1 in denote(twins, Expr("circle", relation="above", anchor=Expr("square", colour="green")))


def test_superlatives_only_where_they_compare() -> None:
    for scene in _scenes(80, seed=4):
        for target in range(len(scene.shapes)):
            for e in candidate_expressions(scene, target):
                if e.superlative is not None:
                    base = Expr(e.kind, colour=e.colour, size=e.size)
                    assert len(denote(scene, base)) >= 2, (scene.id, e)


def test_every_rec_and_reg_expression_picks_out_its_target(shapes_dir: Path) -> None:
    checked = 0
    for split in ("train", "val", "test"):
        scenes = {s.id: s for s in load_scenes(str(shapes_dir), split)}
        for s in read_samples(str(shapes_dir / f"{split}.parquet")):
            if s.task not in (Task.REC, Task.REG):
                continue
            scene = scenes[s.meta["scene"]]
            expr = Expr.from_dict(s.meta["expression"])
            assert denote(scene, expr, CONFIG) == {s.meta["target"]}, (s.id, expr)
            coord = render_box(scene.box(s.meta["target"]))
            if s.task == Task.REC:
                assert expr.text() in s.turns[0].text and s.turns[1].text == coord
            else:
                assert coord in s.turns[0].text and s.turns[1].text.lower().startswith(expr.text())
            checked += 1
    assert checked > 80


def test_rec_stays_unambiguous_on_crowded_scenes() -> None:
    config = ShapesConfig(min_shapes=4, max_shapes=8, kinds=("circle", "square"), colours=("red", "blue"))
    mix = TaskMix({Task.REC: 8})
    for k, scene in enumerate(_scenes(60, seed=9, config=config)):
        for s in scene_samples(scene, "x.png", np.random.default_rng(k), config, mix):
            assert denote(scene, Expr.from_dict(s.meta["expression"]), config) == {s.meta["target"]}


# splits -------------------------------------------------------------------------------------------
def test_splits_share_no_scene_image_or_sample(shapes_dir: Path) -> None:
    scene_ids, pixel_hashes, sample_ids = {}, {}, {}
    for split in ("train", "val", "test"):
        scenes = load_scenes(str(shapes_dir), split)
        scene_ids[split] = {s.id for s in scenes}
        pixel_hashes[split] = {
            hashlib.sha256(np.asarray(Image.open(p)).tobytes()).hexdigest() for p in (shapes_dir / "images" / split).glob("*.png")
        }
        assert len(pixel_hashes[split]) == len(scenes)  # distinct pictures within a split too
        samples = list(read_samples(str(shapes_dir / f"{split}.parquet")))
        sample_ids[split] = {s.id for s in samples}
        assert all(s.image.startswith(f"images/{split}/") and s.meta["scene"] in scene_ids[split] for s in samples)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not scene_ids[a] & scene_ids[b]
        assert not pixel_hashes[a] & pixel_hashes[b]
        assert not sample_ids[a] & sample_ids[b]


def test_every_task_type_is_emitted(shapes_dir: Path) -> None:
    manifest = read_manifest(str(shapes_dir))
    seen = set()
    for split, info in manifest["splits"].items():
        tasks = {s.task for s in read_samples(str(shapes_dir / f"{split}.parquet"))}
        assert tasks == set(info["tasks"])
        assert (Task.POPE.value in tasks) == (split in ("val", "test"))
        seen |= tasks
    assert seen == SHAPES_TASKS


# answers ------------------------------------------------------------------------------------------
def test_answers_agree_with_the_scene(shapes_dir: Path) -> None:
    scenes = {s.id: s for s in load_scenes(str(shapes_dir), "train")}
    by_task: dict[str, int] = defaultdict(int)
    for s in read_samples(str(shapes_dir / "train.parquet")):
        scene = scenes[s.meta["scene"]]
        answer = s.turns[-1].text
        by_task[s.task] += 1
        if s.task in (Task.COORD2OBJ, Task.TEXT2OBJ):
            chosen = s.object_images[string.ascii_uppercase.index(answer)]
            assert chosen.box == scene.box(s.meta["target"])
            assert len({o.box for o in s.object_images}) == len(s.object_images)  # options differ
        elif s.task == Task.OBJ2COORD:
            assert answer == render_box(s.object_images[0].box) == render_box(scene.box(s.meta["target"]))
        elif s.task == Task.RELATION:
            a, b = (o.box for o in s.object_images)
            holds = {
                "left of": a.x2 <= b.x1, "right of": a.x1 >= b.x2, "above": a.y2 <= b.y1, "below": a.y1 >= b.y2,
                "bigger than": a.area >= 1.5 * b.area,
            }[s.meta["relation"]]
            assert answer == ("Yes" if holds else "No")
        elif s.task in (Task.GROUNDED_DESC, Task.GROUNDED_CONV):
            text = " ".join(t.text for t in s.turns)
            assert {render_box(o.box) for o in s.objects if o.show == Show.COORD} <= {
                render_box(b) for b in parse_boxes(text).boxes
            }
            assert not parse_boxes(text).misses
            assert {o.box for o in s.objects} <= set(scene.boxes)
        elif s.task == Task.CAPTION:
            n = len(scene.shapes)
            assert answer.startswith(f"{n} shape" + ("" if n == 1 else "s"))
        stage = {Task.CAPTION: 1, Task.GROUNDED_CONV: 3, Task.GROUNDED_DESC: 3}.get(s.task, 2)
        assert s.meta["stage"] == stage
    assert set(by_task) == SHAPES_TASKS - {Task.POPE.value}


def test_relation_holds_matches_its_definition() -> None:
    scene = _scene(("circle", "red", "large", (10, 10, 90, 90)), ("square", "blue", "small", (120, 120, 150, 150)))
    assert relation_holds(scene, "left of", 0, 1) and relation_holds(scene, "above", 0, 1)
    assert relation_holds(scene, "right of", 1, 0) and relation_holds(scene, "below", 1, 0)
    assert relation_holds(scene, "bigger than", 0, 1) and not relation_holds(scene, "bigger than", 1, 0)
    assert not relation_holds(scene, "next to", 0, 1)  # 30 px apart on each axis: 0.21 of the side
    with pytest.raises(ValueError, match="unknown relation"):
        relation_holds(scene, "inside", 0, 1)
