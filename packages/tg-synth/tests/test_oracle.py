"""The shapes oracle answers from truth: every claim it makes holds in its scene."""

from __future__ import annotations

from pathlib import Path

from tg_data.coords import render_box
from tg_data.shapes import load_scenes
from tg_data.shapes.language import denote
from tg_data.shapes.scene import relation_holds
from tg_synth.backends.oracle import ShapesOracle
from tg_synth.config import ChatConfig, DetectorConfig
from tg_synth.parsing import MARKER


def _objects(scene) -> list[dict]:
    return [{"id": j + 1, "name": s.name, "box": render_box(scene.box(j))} for j, s in enumerate(scene.shapes)]


def test_recognition_lists_exactly_the_scene_without_noise(shapes_root: Path) -> None:
    scenes = load_scenes(str(shapes_root), "train")
    oracle = ShapesOracle({s.id: s for s in scenes}, ChatConfig(hallucination_rate=0, generic_label_rate=0))
    for s in scenes:
        names = oracle.answer("recognize", {"image_id": s.id, "max_objects": 20})["objects"]
        assert set(names) == {sh.name for sh in s.shapes}


def test_recognition_noise_is_absent_objects_and_generic_labels(shapes_root: Path) -> None:
    scenes = load_scenes(str(shapes_root), "train")
    oracle = ShapesOracle({s.id: s for s in scenes}, ChatConfig(hallucination_rate=1, generic_label_rate=1))
    for s in scenes:
        names = oracle.answer("recognize", {"image_id": s.id, "max_objects": 20})["objects"]
        extra = set(names) - {sh.name for sh in s.shapes}
        assert "shape" in extra and len(extra) == 2  # one absent object, one generic label


def test_detector_boxes_are_the_truth_for_exact_names(shapes_root: Path) -> None:
    scenes = load_scenes(str(shapes_root), "train")
    oracle = ShapesOracle({s.id: s for s in scenes})
    cfg = DetectorConfig(low_confidence_rate=0, loose_box_rate=0)
    for s in scenes:
        for sh in s.shapes:
            dets = oracle.detect(s.id, [sh.name], cfg)
            truth = {tuple(s.box(k).to_list()) for k, o in enumerate(s.shapes) if o.name == sh.name}
            assert {tuple(d.box.to_list()) for d in dets} == truth
            assert all(0.6 <= d.score <= 0.98 for d in dets)
        assert oracle.detect(s.id, ["unicorn"], cfg) == []


def test_relations_refer_and_marks_are_true(shapes_root: Path) -> None:
    scenes = load_scenes(str(shapes_root), "train")
    oracle = ShapesOracle({s.id: s for s in scenes}, ChatConfig(max_relations=50))
    checked = 0
    for s in scenes:
        objs = _objects(s)
        rels = oracle.answer("relate", {"image_id": s.id, "objects": objs, "max_relations": 50})["relations"]
        for t in rels:
            assert relation_holds(s, t["relation"], t["subject"] - 1, t["object"] - 1)
            checked += 1
        exprs = oracle.answer("refer", {"image_id": s.id, "objects": objs, "relations": rels})["expressions"]
        assert {e["id"] for e in exprs} == {o["id"] for o in objs}
        from tg_data.shapes.language import candidate_expressions

        for e in exprs:
            # the expression is one of the language's unambiguous expressions for exactly that shape
            texts = {x.text(): x for x in candidate_expressions(s, e["id"] - 1)}
            assert e["expression"] in texts
            assert denote(s, texts[e["expression"]]) == {e["id"] - 1}
        desc = oracle.answer("describe", {"image_id": s.id, "objects": objs, "relations": rels})["description"]
        assert {int(m) for m in MARKER.findall(desc)} == {o["id"] for o in objs}
        conv = oracle.answer("converse", {"image_id": s.id, "objects": objs, "relations": rels, "rounds": 3})["turns"]
        assert 1 <= len(conv) <= 3
        for m in MARKER.finditer(conv[0]["answer"]):
            j = int(m.group(1)) - 1
            # "a red circle {3}": the words before a mark name the marked shape
            before = conv[0]["answer"][: m.start()].split(",")[-1]
            assert s.shapes[j].kind in before and s.shapes[j].colour in before
    assert checked > 10


def test_instances_are_matched_one_to_one_by_iou_and_name(shapes_root: Path) -> None:
    s = next(sc for sc in load_scenes(str(shapes_root), "train") if len(sc.shapes) >= 2)
    oracle = ShapesOracle({s.id: s})
    box = s.box(0)
    loose = [box.x1 - 0.01, box.y1 - 0.01, min(1, box.x2 + 0.01), min(1, box.y2 + 0.01)]
    objs = [
        {"id": 1, "name": s.shapes[0].name, "box": render_box(box)},
        {"id": 2, "name": s.shapes[0].name, "box": "[" + ",".join(f"{max(0, v):.3f}" for v in loose) + "]"},
        {"id": 3, "name": "unicorn", "box": render_box(s.box(1))},
    ]
    assert oracle.match(s, objs) == {1: 0}
