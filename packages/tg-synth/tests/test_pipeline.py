"""The whole pipeline on the shapes world with the oracle backends, in process."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tg_data.coords import parse_box, parse_boxes, render_box
from tg_data.io import read_samples
from tg_data.schema import IMAGE_TOKEN, OBJECT_TOKEN, Show, Task
from tg_data.shapes import load_scenes
from tg_synth.config import STAGE2_TASKS, STAGE3_TASKS
from tg_synth.run import run


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory: pytest.TempPathFactory, shapes_root: Path) -> tuple[Path, dict]:
    from tg_synth.config import config_from_dict

    out = tmp_path_factory.mktemp("run")
    cfg = config_from_dict({
        "progress": False,
        "input": {"kind": "shapes", "shapes_root": str(shapes_root)},
        "filters": {"min_object_area": 0.005, "max_object_area": 0.5},
        "output": {"dir": str(out), "save_crops": True},
    })
    return out, run(cfg)


def _index(boxes: list[list[float]], box: list[float]) -> int | None:
    """Which truth box this is (boxes pass through the cache at 6 decimals)."""
    return next((k for k, b in enumerate(boxes) if max(abs(x - y) for x, y in zip(b, box, strict=True)) < 1e-5), None)


def _samples(out: Path, stage: int) -> list:
    return list(read_samples(str(out / f"stage{stage}")))


def test_every_task_type_is_made_in_its_stage(shapes_run) -> None:
    out, manifest = shapes_run
    s2, s3 = _samples(out, 2), _samples(out, 3)
    assert {s.task for s in s2} == set(STAGE2_TASKS)
    assert {s.task for s in s3} == set(STAGE3_TASKS)
    assert all(s.task in {t.value for t in Task} for s in s2 + s3)
    assert manifest["tasks"] == dict(sorted(Counter(s.task for s in s2 + s3).items()))
    assert manifest["stage2"]["samples"] == len(s2) and manifest["stage3"]["samples"] == len(s3)
    assert all(s.meta["stage"] == 2 for s in s2) and all(s.meta["stage"] == 3 for s in s3)
    assert len({s.id for s in s2 + s3}) == len(s2) + len(s3)


def test_images_resolve_against_the_stated_root(shapes_run, shapes_root: Path) -> None:
    out, manifest = shapes_run
    root = Path(manifest["image_root"])
    assert root == shapes_root.resolve()
    for s in _samples(out, 2) + _samples(out, 3):
        path = root / s.image
        assert path.is_file()
        with Image.open(path) as im:
            assert im.size == (s.width, s.height)


def test_placeholders_match_objects_and_boxes_are_the_truth(shapes_run, shapes_root: Path) -> None:
    out, _ = shapes_run
    scenes = {s.id: s for s in load_scenes(str(shapes_root), "train")}
    for s in _samples(out, 2) + _samples(out, 3):
        text = "".join(t.text for t in s.turns)
        assert text.count(IMAGE_TOKEN) == 1 and s.turns[0].text.startswith(IMAGE_TOKEN)
        assert text.count(OBJECT_TOKEN) == len(s.object_images)
        truth = [b.to_list() for b in scenes[s.meta["image_id"]].boxes]
        loose_ok = s.task in ("coord2obj", "text2obj", "relation", "obj2coord")  # may show a loose detector box
        for o in s.objects:
            if not loose_ok:
                assert _index(truth, o.box.to_list()) is not None, (s.id, o)
        # every coordinate written in the turns is the box of one of the sample's objects
        boxes = {tuple(o.box.to_list()) for o in s.objects}
        for turn in s.turns:
            parsed = parse_boxes(turn.text)
            assert not parsed.misses
            for b in parsed.boxes:
                assert any(parse_box(render_box(type(b)(*ob))) == b for ob in boxes)


def test_answers_are_right(shapes_run, shapes_root: Path) -> None:
    out, _ = shapes_run
    scenes = {s.id: s for s in load_scenes(str(shapes_root), "train")}
    for s in _samples(out, 2):
        answer = s.turns[-1].text
        if s.task in ("rec", "obj2coord"):
            assert answer == render_box(s.objects[0].box)
        elif s.task in ("coord2obj", "text2obj"):
            letter = s.meta["answer"]
            assert answer == letter
            chosen = s.object_images[ord(letter) - ord("A")]
            if s.task == "coord2obj":
                assert render_box(chosen.box) in s.turns[0].text
        elif s.task == "relation":
            from tg_data.shapes.scene import relation_holds

            scene = scenes[s.meta["image_id"]]
            truth = [b.to_list() for b in scene.boxes]
            idx = [_index(truth, o.box.to_list()) for o in s.object_images]
            rel = s.meta["relation"]
            if s.meta["form"] in ("yes", "no"):
                assert answer == ("Yes" if relation_holds(scene, rel, idx[0], idx[1]) else "No")
            else:  # the anchor first, then the options; the answer's option stands in the relation to the anchor
                chosen = idx[1 + ord(answer) - ord("A")]
                assert relation_holds(scene, rel, chosen, idx[0])


def test_object_images_carry_the_crop_margin_and_crop_specs_are_written(shapes_run) -> None:
    out, manifest = shapes_run
    specs = [json.loads(line) for line in (out / "crops.jsonl").read_text().splitlines()]
    assert manifest["crops"]["count"] == len(specs) > 0
    shown = {(s.image, tuple(o.box.to_list())) for s in _samples(out, 2) for o in s.object_images}
    assert {(c["image"], tuple(c["box"])) for c in specs} == shown
    for s in _samples(out, 2):
        assert all(o.margin == 0.1 and o.show == Show.IMAGE.value for o in s.object_images)
    for c in specs[:20]:
        x1, y1, x2, y2 = c["pixel_box"]
        with Image.open(out / c["file"]) as crop:
            assert crop.size == (x2 - x1, y2 - y1)


def test_filters_are_counted_by_reason(shapes_run) -> None:
    _, manifest = shapes_run
    filtered = manifest["filtered"]
    # the oracles' noise (absent objects, generic labels, low scores, loose boxes) is caught and counted
    for reason in ("grounding.unconfirmed", "grounding.low_confidence", "grounding.duplicate_box"):
        assert filtered.get(reason, 0) > 0, reason
    assert all(isinstance(n, int) and n > 0 for n in filtered.values())


def test_a_second_run_calls_nothing_and_writes_the_same(shapes_run, tmp_path: Path) -> None:
    out, manifest = shapes_run
    from tg_synth.config import config_from_dict

    cfg = config_from_dict(manifest["config"])
    again = run(cfg)
    assert all(s["computed_this_run"] == 0 for s in again["steps"].values())
    assert again["tasks"] == manifest["tasks"] and again["filtered"] == manifest["filtered"]
    assert [x.to_dict() for x in _samples(out, 2)] == [x.to_dict() for x in read_samples(str(out / "stage2"))]


def test_two_fresh_runs_write_identical_samples(shapes_root: Path, tmp_path: Path, make_config) -> None:
    a = run(make_config(tmp_path / "a", {"qa": {"rec": 1, "grounded_conv": 0}}))
    b = run(make_config(tmp_path / "b", {"qa": {"rec": 1, "grounded_conv": 0}}))
    assert a["tasks"] == b["tasks"] and "grounded_conv" not in a["tasks"]
    for stage in (2, 3):
        sa = [s.to_dict() for s in read_samples(str(tmp_path / "a" / f"stage{stage}"))]
        sb = [s.to_dict() for s in read_samples(str(tmp_path / "b" / f"stage{stage}"))]
        assert sa == sb


def test_qa_counts_cap_each_task_per_image(tmp_path: Path, make_config) -> None:
    m = run(make_config(tmp_path, {"qa": {"obj2coord": 1, "coord2obj": 0, "text2obj": 0, "reg": 3, "rec": 0,
                                          "relation": 0, "grounded_conv": 0, "grounded_desc": 1}}))
    assert set(m["tasks"]) == {"obj2coord", "reg", "grounded_desc"}
    per_image = Counter((s.meta["image_id"], s.task) for s in _samples(tmp_path, 2))
    assert max(n for (_, t), n in per_image.items() if t == "obj2coord") == 1
    assert max(n for (_, t), n in per_image.items() if t == "reg") == 3
    # no refer/converse call is made for tasks nobody asked for
    assert m["steps"]["converse"]["done"] == 0


def test_absolute_image_paths_when_asked(tmp_path: Path, make_config) -> None:
    m = run(make_config(tmp_path, {"output": {"absolute_image_paths": True}, "qa": {"grounded_conv": 0}}))
    assert m["image_root"] is None and m["image_paths"] == "absolute"
    for s in _samples(tmp_path, 2):
        assert Path(s.image).is_absolute() and Path(s.image).is_file()


def test_detection_requests_are_batched_and_none_is_lost() -> None:
    import asyncio

    from tg_synth.backends.base import DetectRequest
    from tg_synth.records import Detection
    from tg_synth.steps.ground import DetectorBatcher

    class Recorder:
        name, batch_size = "recorder", 4

        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        def detect(self, requests):
            if any(r.image_id == "bad" for r in requests):
                raise OSError("cannot open bad")
            self.batches.append([r.image_id for r in requests])
            from tg_data.box import Box

            return [[Detection(r.labels[0], Box(0.1, 0.1, 0.2, 0.2), 0.9)] for r in requests]

    async def main(det: Recorder):
        batcher = DetectorBatcher(det, max_wait_s=0.05)
        reqs = [DetectRequest(f"im{k}", "x.png", 10, 10, ("car",)) for k in range(10)]
        reqs.insert(5, DetectRequest("bad", "bad.png", 10, 10, ("car",)))
        try:
            return await asyncio.gather(*(batcher.detect(r) for r in reqs), return_exceptions=True)
        finally:
            await batcher.aclose()

    det = Recorder()
    results = asyncio.run(main(det))
    assert len(results) == 11
    assert isinstance(results[5], OSError)  # the bad image fails alone
    assert all(isinstance(r, list) and r[0].label == "car" for k, r in enumerate(results) if k != 5)
    assert sorted(i for b in det.batches for i in b) == sorted(f"im{k}" for k in range(10))
    assert max(len(b) for b in det.batches) == 4  # requests were gathered into full batches
