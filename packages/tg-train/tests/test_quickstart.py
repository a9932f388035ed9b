"""The main job, shrunk: shapes world, stages 1 -> 2 -> 3 on the tiny preset, REC against two baselines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tg_data.coords import parse_box
from tg_data.io import read_samples
from tg_model.modeling import TinyGroundingGPTForCausalLM
from tg_train.cli import app
from tg_train.pipeline import load_pipeline
from tg_train.recipe import load_recipe

SCALE = 0.005


def _small_stages(n: int, small_llm: dict[str, int]) -> list[str]:
    """--set items that give every stage small batches and the first (which builds the model) a small LLM;
    the recipe's other model overrides (image tokens, image placement) stay as shipped."""
    model = [f"model.overrides.{k}={v}" for k, v in small_llm.items()]
    out = []
    for k in range(n):
        items = ["batch.global=8", "batch.micro=8", *(model if k == 0 else [])]
        out += ["--set", f"stages.{k}.set={json.dumps(items)}"]
    return out


def _pixel_iou(a: tuple[float, ...], b: tuple[float, ...], width: int, height: int) -> float:
    """IoU in original-image pixels, each box clipped to the picture (written out here, apart from tg-eval)."""
    def clip(box):
        x1, y1, x2, y2 = box
        return max(0, min(x1, width)), max(0, min(y1, height)), max(0, min(x2, width)), max(0, min(y2, height))

    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = clip(a), clip(b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def test_quickstart_at_a_small_scale(tmp_path: Path, small_llm):
    out = tmp_path / "quickstart"
    n_stages = len(load_pipeline("quickstart").stages)
    start = time.time()
    result = CliRunner().invoke(
        app, ["quickstart", "--scale", str(SCALE), "--set", f"output_dir={out}", *_small_stages(n_stages, small_llm)]
    )
    elapsed_min = (time.time() - start) / 60
    assert result.exit_code == 0, result.output
    assert "REC Acc@0.5 on" in result.stdout and "baseline: centre box" in result.stdout

    results = json.loads((out / "results.json").read_text())
    for key in ("rec_acc50", "baseline_center_acc50", "baseline_whole_acc50"):
        assert 0.0 <= results[key] <= 1.0, key
    assert 0 < results["minutes"] <= elapsed_min

    # every stage ran its scaled number of steps, each from the previous stage's export
    pipeline = load_pipeline("quickstart")
    assert len(results["stages"]) == n_stages
    for k, (entry, stage) in enumerate(zip(pipeline.stages, results["stages"], strict=True)):
        steps = load_recipe(entry.recipe, entry.set, check_files=False).optim.max_steps
        assert stage["steps"] == max(2, round(steps * SCALE))
        assert (out / f"stage{k + 1}" / "export" / "config.json").is_file()
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"

    # the towers were pretrained first, loaded by stage 1 and kept frozen to the end: the final
    # export's towers hold exactly the pretrained files' weights
    towers = results["towers"]
    assert towers["steps"] == max(2, round(pipeline.towers.steps * SCALE))
    final = TinyGroundingGPTForCausalLM.from_pretrained(out / f"stage{n_stages}" / "export")
    # the first stage's layout (merged patches, image placement) travels with every export
    shipped = load_recipe(pipeline.stages[0].recipe, check_files=False).model.overrides
    assert final.config.spatial_merge_size == shipped["spatial_merge_size"] == 2
    assert final.config.image_placement == shipped.get("image_placement", "as_written")
    assert final.config.text_config.hidden_size == small_llm["text_hidden_size"]
    for tower, path in zip(final.encoder.towers, towers["files"], strict=True):
        saved = load_file(path)
        state = tower.native_state_dict()
        assert set(state) == set(saved) and all(torch.equal(v, saved[k]) for k, v in state.items())

    # the figures, recomputed from the held-out REC questions and the model's answers
    rec = [s for s in read_samples(str(out / "shapes" / "test.parquet")) if s.task == "rec"]
    assert results["rec_n"] == len(rec) > 0
    lines = (out / "predictions-rec.jsonl").read_text().splitlines()
    answers = {r["id"]: r["text"] for r in map(json.loads, lines)}
    assert set(answers) == {s.id for s in rec}
    hits = {"model": 0, "center": 0, "whole": 0}
    model_hit = {}
    for s in rec:
        w, h = s.width, s.height
        target = s.objects[0].box.to_pixels(w, h)
        box = parse_box(answers[s.id])
        model_hit[s.id] = box is not None and _pixel_iou(box.to_pixels(w, h), target, w, h) >= 0.5
        hits["model"] += model_hit[s.id]
        hits["center"] += _pixel_iou((w / 4, h / 4, 3 * w / 4, 3 * h / 4), target, w, h) >= 0.5
        hits["whole"] += _pixel_iou((0, 0, w, h), target, w, h) >= 0.5
    assert results["rec_acc50"] == hits["model"] / len(rec)
    assert results["baseline_center_acc50"] == hits["center"] / len(rec)
    assert results["baseline_whole_acc50"] == hits["whole"] / len(rec)

    # the breakdown by the number of shapes in the scene adds up to the same answers
    scenes_file = (out / "shapes" / "scenes" / "test.jsonl").read_text().splitlines()
    n_shapes = {d["id"]: len(d["shapes"]) for d in map(json.loads, scenes_file)}
    by_shapes = results["by_shapes"]
    for n, row in by_shapes.items():
        asked = [s for s in rec if n_shapes[s.meta["scene"]] == int(n)]
        assert row["n"] == len(asked) > 0
        assert row["acc50"] == sum(model_hit[s.id] for s in asked) / len(asked)
    assert sum(row["n"] for row in by_shapes.values()) == len(rec)
    several = [s for s in rec if n_shapes[s.meta["scene"]] > 1]
    landed = results["several_shapes_answers"]
    assert sum(landed.values()) == len(several)
    assert landed["asked_for"] == sum(model_hit[s.id] for s in several)

    # every several-shape question was asked again about another shape of its scene
    swap = results["question_swap"]
    swapped = [json.loads(line)["id"] for line in (out / "predictions-rec-swap.jsonl").read_text().splitlines()]
    assert sorted(swapped) == sorted(f"{s.id}#swap" for s in several) and swap["pairs"] == len(several)
    assert swap["both_asked_for"] <= landed["asked_for"]
    assert swap["both_asked_for"] + swap["same_shape"] <= swap["pairs"]
    assert f"both answers right {swap['both_asked_for']} of {swap['pairs']}" in result.stdout
