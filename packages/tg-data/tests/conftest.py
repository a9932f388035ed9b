"""Fixtures for tg-data's tests: a small shapes dataset, and files in each upstream format.

Each upstream builder writes a tiny dataset exactly as its project publishes it, optionally with
one bad record, and returns what a reader needs plus what it should find.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tg_data.box import Box
from tg_data.schema import ObjectRef, Sample, Show, Turn
from tg_data.shapes import ShapesConfig, write_shapes_dataset

SHAPES_SCENES = {"train": 40, "val": 12, "test": 12}
SHAPES_SEED = 3


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shapes dataset shared by the read-only tests (do not modify it)."""
    out = tmp_path_factory.mktemp("shapes") / "ds"
    write_shapes_dataset(str(out), SHAPES_SCENES, seed=SHAPES_SEED, config=ShapesConfig())
    return out


@pytest.fixture
def shapes_copy(shapes_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the shapes dataset that a test may break."""
    import shutil

    dst = tmp_path / "ds"
    shutil.copytree(shapes_dir, dst)
    return dst


def make_sample(sid: str = "s1", **kw: Any) -> Sample:
    """A small valid sample with an image, one coordinate object and one object image."""
    box = Box(0.1, 0.2, 0.5, 0.6)
    other = Box(0.55, 0.15, 0.9, 0.45)  # inside the 64x48 image (y from 0.125 to 0.875)
    defaults: dict[str, Any] = {
        "id": sid,
        "image": "img.png",
        "width": 64,
        "height": 48,
        "task": "obj2coord",
        "source": "test",
        "objects": [ObjectRef(box, Show.COORD.value, label="cat"), ObjectRef(other, Show.IMAGE.value, label="dog")],
        "turns": [
            Turn("user", "<image>\nWhere is <object>? And the cat?"),
            Turn("assistant", "The cat is at [0.100,0.200,0.500,0.600]."),
        ],
        "meta": {"k": [1, 2], "note": "ü"},
    }
    defaults.update(kw)
    return Sample(**defaults)


def write_image(path: Path, width: int, height: int, colour: tuple[int, int, int] = (90, 120, 150)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)


# upstream formats ---------------------------------------------------------------------------------
@dataclass
class Upstream:
    """An upstream dataset written by a builder."""

    fmt: str
    path: Path
    options: dict[str, Any]
    samples: int  # how many samples a reader yields from the good records
    truth: dict[str, Any] = field(default_factory=dict)


def build_llava(tmp: Path, bad: bool = False) -> Upstream:
    records: list[Any] = [
        {
            "id": "000000033471",
            "image": "coco/train2017/000000033471.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
                {"from": "gpt", "value": "The bus in the image is white and red."},
                {"from": "human", "value": "What feature can be seen on the back of the bus?"},
                {"from": "gpt", "value": "The back of the bus features an advertisement."},
            ],
        },
        {
            "id": 4539375,
            "image": "00453/004539375.jpg",
            "model": "",
            "conversations": [
                {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
                {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"},
            ],
        },
        {
            "id": "sharegpt-text-only",
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "Say hi."},
                {"from": "gpt", "value": "Hi."},
            ],
        },
    ]
    if bad:
        records.insert(1, {"id": "bad", "conversations": [{"from": "robot", "value": "beep"}]})
    path = tmp / "llava_v1_5_mix_sample.json"
    path.write_text(json.dumps(records, indent=2))
    return Upstream("llava", path, {}, 3, {"records": [r for r in records if r.get("id") != "bad"]})


def build_refcoco(tmp: Path, bad: bool = False) -> Upstream:
    root = tmp / "refcoco"
    root.mkdir(parents=True, exist_ok=True)
    images = [
        {"id": 581857, "file_name": "COCO_train2014_000000581857.jpg", "width": 640, "height": 480},
        {"id": 2964, "file_name": "COCO_train2014_000000002964.jpg", "width": 427, "height": 640},
    ]
    annotations = [
        {"id": 1719310, "image_id": 581857, "bbox": [103.93, 299.99, 134.22, 177.2], "category_id": 1,
         "area": 1.0, "iscrowd": 0, "segmentation": []},
        {"id": 1720000, "image_id": 581857, "bbox": [0.0, 0.0, 640.0, 480.0], "category_id": 62,
         "area": 1.0, "iscrowd": 0, "segmentation": []},
        # 0.4 px past the right edge: annotation rounding, clipped
        {"id": 45000, "image_id": 2964, "bbox": [300.0, 10.0, 127.4, 200.0], "category_id": 1,
         "area": 1.0, "iscrowd": 0, "segmentation": []},
    ]
    categories = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 62, "name": "chair", "supercategory": "furniture"}]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))

    def ref(ref_id: int, ann_id: int, image_id: int, split: str, sents: list[str]) -> dict[str, Any]:
        sentences = [{"tokens": s.split(), "raw": s.upper(), "sent_id": ref_id * 10 + k, "sent": s} for k, s in enumerate(sents)]
        return {"sent_ids": [s["sent_id"] for s in sentences], "file_name": f"x_{ann_id}.jpg", "ann_id": ann_id,
                "ref_id": ref_id, "image_id": image_id, "split": split, "sentences": sentences, "category_id": 1}

    refs = [
        ref(0, 1719310, 581857, "train", ["the lady with the blue shirt", "lady with back to us"]),
        ref(1, 1720000, 581857, "val", ["whole picture chair"]),
        ref(2, 45000, 2964, "testA", ["man on right", "right guy"]),
        ref(3, 1719310, 581857, "testB", ["blue shirt"]),
    ]
    if bad:
        refs.insert(2, ref(9, 999, 581857, "val", ["an annotation that is not there"]))
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    truth = {"images": {im["id"]: im for im in images}, "anns": {a["id"]: a for a in annotations}, "refs": refs}
    return Upstream("refcoco", root, {}, 6, truth)


def build_vg(tmp: Path, bad: bool = False) -> Upstream:
    root = tmp / "vg"
    root.mkdir(parents=True, exist_ok=True)
    image_data = [
        {"width": 800, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg", "height": 600,
         "image_id": 1, "coco_id": None, "flickr_id": None},
        {"width": 500, "url": "https://cs.stanford.edu/people/rak248/VG_100K/10.jpg", "height": 800,
         "image_id": 10, "coco_id": 123, "flickr_id": None},
    ]
    regions = [
        {"regions": [
            {"region_id": 1382, "width": 82, "height": 139, "image_id": 1, "phrase": "the clock is green in colour", "y": 57, "x": 421},
            {"region_id": 1383, "width": 100, "height": 50, "image_id": 1, "phrase": "  shade is\nalong the street ", "y": 550, "x": 700},
        ], "id": 1},
        {"regions": [
            # half a pixel past the bottom: clipped
            {"region_id": 20, "width": 500, "height": 100, "image_id": 10, "phrase": "a white fence", "y": 700.5, "x": 0},
        ], "id": 10},
    ]
    if bad:
        regions[0]["regions"].insert(1, {"region_id": 1390, "width": -5, "height": 10, "image_id": 1, "phrase": "inverted", "y": 5, "x": 50})
    (root / "image_data.json").write_text(json.dumps(image_data))
    (root / "region_descriptions.json").write_text(json.dumps(regions))
    return Upstream("vg", root / "region_descriptions.json", {"image_data": str(root / "image_data.json")}, 3,
                    {"image_data": image_data, "regions": regions})


FLICKR_SENTENCES = [
    "[/EN#18/people A child] in [/EN#19/clothing a pink dress] is climbing up [/EN#20/other a set of stairs] in [/EN#21/scene an entry way] .",
    "[/EN#22/people/bodyparts Two girls] play near [/EN#0/notvisual the camera] .",
]
FLICKR_XML = """<annotation>
  <filename>1000092795.jpg</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>18</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>110</xmax><ymax>220</ymax></bndbox></object>
  <object><name>19</name><nobndbox>1</nobndbox></object>
  <object><name>20</name><name>22</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>
  <object><name>22</name><bndbox><xmin>301</xmin><ymin>101</ymin><xmax>500</xmax><ymax>375</ymax></bndbox></object>
  <object><name>21</name><nobndbox>0</nobndbox><scene>1</scene></object>
</annotation>
"""


def build_flickr30k(tmp: Path, bad: bool = False) -> Upstream:
    root = tmp / "flickr30k_entities"
    (root / "Sentences").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    lines = list(FLICKR_SENTENCES)
    if bad:
        lines.insert(1, "[/EN#30/people A broken phrase without its end .")
    (root / "Sentences" / "1000092795.txt").write_text("\n".join(lines) + "\n")
    (root / "Annotations" / "1000092795.xml").write_text(FLICKR_XML)
    (root / "train.txt").write_text("1000092795\n")
    (root / "val.txt").write_text("")
    return Upstream("flickr30k", root, {}, 2)


def build_pope(tmp: Path, bad: bool = False) -> Upstream:
    rows: list[Any] = [
        {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?", "label": "yes"},
        {"question_id": 2, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a car in the image?", "label": "no"},
        {"question_id": 3, "image": "COCO_val2014_000000210789.jpg", "text": "Is there an umbrella in the image?", "label": "yes"},
    ]
    if bad:
        rows.insert(2, {"question_id": 9, "image": "x.jpg", "text": "Is there a cat in the image?", "label": "maybe"})
    path = tmp / "coco_pope_popular.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Upstream("pope", path, {}, 3)


def build_caps_boxes(tmp: Path, bad: bool = False) -> Upstream:
    rows: list[Any] = [
        {"id": "000000296284", "image": "000000296284.jpg", "captions": ["A donut shop.", "Donuts in a case."],
         "instances": [{"category": "donut", "bbox": [0.37, 0.584, 0.504, 0.709]}, {"category": "person", "bbox": [0.0, 0.0, 1.0, 1.0]}]},
        {"id": "000000151358", "image": "000000151358.jpg", "captions": ["A cat on a sofa."],
         "instances": [{"category": "cat", "bbox": [0.1, 0.2, 0.6, 0.9]}]},
    ]
    if bad:
        rows.insert(1, {"id": "x", "image": "x.jpg", "captions": ["bad"], "instances": [{"category": "cat", "bbox": [0.1, 0.2]}]})
    path = tmp / "caps_boxes_coco2014_val_80.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sizes = {"000000296284.jpg": (640, 480), "000000151358.jpg": (480, 640), "x.jpg": (10, 10)}
    return Upstream("caps-boxes", path, {"sizes": sizes}, 3)


def build_tg(tmp: Path, bad: bool = False) -> Upstream:
    lines = [json.dumps(make_sample(f"s{k}").to_dict()) for k in range(3)]
    if bad:
        lines.insert(1, '{"id": "broken", "turns": [')
    path = tmp / "samples.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return Upstream("tg", path, {}, 3)


UPSTREAM_BUILDERS: dict[str, Callable[..., Upstream]] = {
    "tg": build_tg,
    "llava": build_llava,
    "refcoco": build_refcoco,
    "vg": build_vg,
    "flickr30k": build_flickr30k,
    "pope": build_pope,
    "caps-boxes": build_caps_boxes,
}


@pytest.fixture
def upstream(tmp_path: Path) -> Callable[..., Upstream]:
    def build(fmt: str, bad: bool = False) -> Upstream:
        return UPSTREAM_BUILDERS[fmt](tmp_path, bad=bad)

    return build


@pytest.fixture
def sample_factory() -> Callable[..., Sample]:
    return make_sample


@pytest.fixture
def image_writer() -> Callable[..., None]:
    return write_image
