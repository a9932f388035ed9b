from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tg_data.box import Box
from tg_data.io import DataError
from tg_synth.config import ConfigError, InputConfig
from tg_synth.inputs import list_inputs, shapes_inputs


def _image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


def _listing(tmp_path: Path, rows: list[dict]) -> Path:
    p = tmp_path / "list.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_image_list_reads_sizes_and_converts_annotation_boxes(tmp_path: Path) -> None:
    _image(tmp_path / "a" / "x.jpg", (200, 100))
    listing = _listing(tmp_path, [
        {"id": "x1", "image": "a/x.jpg", "box_format": "xyxy",
         "annotations": [{"label": "Red Car", "box": [0, 0, 100, 50]}]},
        {"id": "x2", "image": "a/x.jpg", "width": 200, "height": 100, "box_format": "xywh",
         "annotations": [{"label": "dog", "box": [100, 50, 100, 50], "source": "vg"}]},
        {"id": "x3", "image": "a/x.jpg", "annotations": [{"label": "cat", "box": [0.0, 0.25, 0.5, 0.5]}]},
    ])
    got = list_inputs(InputConfig(kind="images", root=str(tmp_path), image_list=str(listing)))
    assert [(i.id, i.width, i.height) for i in got.items] == [("x1", 200, 100), ("x2", 200, 100), ("x3", 200, 100)]
    a1, a2, a3 = (i.annotations[0] for i in got.items)
    assert a1.label == "red car" and a1.box == Box.from_pixels(0, 0, 100, 50, 200, 100)
    assert a1.box.to_list() == pytest.approx([0.0, 0.25, 0.5, 0.5])
    assert a2.box.to_list() == pytest.approx([0.5, 0.5, 1.0, 0.75]) and a2.source == "vg"
    assert a3.box.to_list() == pytest.approx([0.0, 0.25, 0.5, 0.5])
    assert got.image_root == tmp_path.resolve() and got.failures == []


def test_missing_images_are_recorded_not_dropped(tmp_path: Path) -> None:
    _image(tmp_path / "ok.png", (10, 10))
    listing = _listing(tmp_path, [{"image": "ok.png"}, {"image": "gone.png"}])
    got = list_inputs(InputConfig(kind="images", root=str(tmp_path), image_list=str(listing)))
    assert [i.id for i in got.items] == ["ok.png"]
    assert got.failures == [{"id": "gone.png", "image": "gone.png", "step": "load",
                             "reason": f"image not found: {tmp_path / 'gone.png'}"}]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (['{"image": "a.png"', None], "list.jsonl:1: malformed JSON"),
        ([{"id": "a", "image": "a.png"}, {"id": "a", "image": "a.png"}], "list.jsonl:2: duplicate image id 'a'"),
        ([{"image": "a.png", "box_format": "cxcywh"}], "box_format must be one of"),
        ([{"image": "a.png", "annotations": [{"label": "x", "box": [0.5, 0.5, 0.2, 0.2]}]}], "bad annotation box"),
        ([{"width": 3}], "each line needs at least 'image'"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path: Path, rows: list, message: str) -> None:
    _image(tmp_path / "a.png", (10, 10))
    p = tmp_path / "list.jsonl"
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows if r is not None))
    with pytest.raises(DataError, match=message):
        list_inputs(InputConfig(kind="images", root=str(tmp_path), image_list=str(p)))


def test_glob_lists_images_in_order(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "sub/c.png"):
        _image(tmp_path / name, (8, 6))
    got = list_inputs(InputConfig(kind="images", root=str(tmp_path), glob="**/*.png"))
    assert [i.image for i in got.items] == ["a.png", "b.png", "sub/c.png"]


def test_shapes_input_is_generated_once_and_regenerated_when_the_config_changes(tmp_path: Path) -> None:
    cfg = InputConfig(kind="shapes", shapes_scenes=3)
    first = shapes_inputs(cfg, tmp_path)
    assert [i.id for i in first.items] == ["train-000000", "train-000001", "train-000002"]
    stamp = (tmp_path / "shapes" / "manifest.json").stat().st_mtime_ns
    again = shapes_inputs(cfg, tmp_path)
    assert (tmp_path / "shapes" / "manifest.json").stat().st_mtime_ns == stamp and again.items == first.items
    more = shapes_inputs(InputConfig(kind="shapes", shapes_scenes=5), tmp_path)
    assert len(more.items) == 5 and more.items[:3] == first.items  # scene i depends only on (seed, split, i)


def test_a_missing_shapes_root_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="leave shapes_root empty to generate one"):
        shapes_inputs(InputConfig(kind="shapes", shapes_root=str(tmp_path / "none")), tmp_path)
