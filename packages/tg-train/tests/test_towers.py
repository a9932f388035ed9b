"""Tower pretraining: the per-patch labels, that the towers learn them, and the checkpoints it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tg_data.shapes import ShapesConfig, write_shapes_dataset
from tg_data.shapes.scene import COLOURS, KINDS, SIZES, Scene
from tg_model.presets import build_model
from tg_train.pipeline import TowersSection
from tg_train.towers import patch_targets, pretrain_towers


def _scene(*shapes: tuple[str, str, str, tuple[float, float, float, float]]) -> Scene:
    return Scene.from_dict({
        "id": "t-0", "width": 100, "height": 100, "background": "white", "textured": False, "texture_seed": 0,
        "shapes": [{"kind": k, "colour": c, "size": s, "px": list(px)} for k, c, s, px in shapes],
    })


def test_patch_targets_label_the_patches_whose_centres_a_box_holds():
    # grid 4: patch centres at 0.125, 0.375, 0.625, 0.875 on both axes
    scene = _scene(
        ("circle", "red", "large", (0, 0, 50, 50)),
        ("star", "blue", "small", (60, 60, 90, 90)),
        ("square", "green", "small", (30, 30, 45, 45)),  # inside the circle's box: owns patch (1, 1)
    )
    t = patch_targets([scene], grid=4)
    covered = {int(i) for i in t.covered[0].nonzero().flatten()}
    assert covered == {0, 1, 4, 5, 10, 11, 14, 15}
    colours, kinds, sizes = list(COLOURS), list(KINDS), list(SIZES)
    for patch in (0, 1, 4):
        assert t.colour[0, patch] == colours.index("red") and t.kind[0, patch] == kinds.index("circle")
        assert t.box[0, patch].tolist() == pytest.approx([0.0, 0.0, 0.5, 0.5])
    assert t.colour[0, 5] == colours.index("green") and t.kind[0, 5] == kinds.index("square")
    assert t.box[0, 5].tolist() == pytest.approx([0.3, 0.3, 0.45, 0.45])
    for patch in (10, 11, 14, 15):
        assert t.colour[0, patch] == colours.index("blue") and t.size[0, patch] == sizes.index("small")
        assert t.box[0, patch].tolist() == pytest.approx([0.6, 0.6, 0.9, 0.9])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_shapes_dataset(str(root), {"train": 160, "test": 32}, seed=3, config=ShapesConfig(image_size=64, max_shapes=2))
    return root


def test_pretrained_towers_learn_the_patch_labels_and_load_as_checkpoints(world: Path, tmp_path: Path):
    section = TowersSection(steps=60, batch=32, lr=3e-3, log_every=20, eval_scenes=32)
    out = tmp_path / "towers"
    summary = pretrain_towers(section, world, out)

    held = summary["held_out"]
    assert summary["held_out_split"] == "test" and summary["held_out_scenes"] == 32
    assert held["colour"] > 0.5  # chance: 1 in 6, on scenes the towers never saw
    assert held["box_l1"] < 0.15  # predicting the mean box gives about 0.2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40, 60]
    assert records[-1]["loss"] < records[0]["loss"]

    # the files are what the first stage loads: frozen towers that differ from the random ones
    weights = {i: path for i, path in enumerate(summary["files"])}
    model, _ = build_model("tiny", encoder_weights=weights)
    fresh, _ = build_model("tiny")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for tower, random_tower in zip(model.encoder.towers, fresh.encoder.towers, strict=True):
            assert not torch.allclose(tower(x), random_tower(x), atol=1e-3)
    assert not any(p.requires_grad for p in model.encoder.parameters())

    # a finished run with the same settings is reused; other settings train again
    stamps = [Path(f).stat().st_mtime_ns for f in summary["files"]]
    assert pretrain_towers(section, world, out) == summary
    assert [Path(f).stat().st_mtime_ns for f in summary["files"]] == stamps
    again = pretrain_towers(TowersSection(steps=2, batch=8, log_every=1, eval_scenes=4), world, out)
    assert again["settings"]["steps"] == 2
    assert [Path(f).stat().st_mtime_ns for f in again["files"]] != stamps


def test_a_world_without_scenes_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"scenes/train\.jsonl.*generate the world first"):
        pretrain_towers(TowersSection(steps=1), tmp_path, tmp_path / "towers")
