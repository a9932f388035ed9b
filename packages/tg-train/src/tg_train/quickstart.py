"""The main job: the whole method on the shapes world with the tiny preset, then REC on held-out scenes.

Generates the shapes world, trains stage 1 -> 2 -> 3 (each from the previous export), answers
the held-out REC questions through tg-infer's batched predictor, scores them with tg-eval
(Acc@0.5 in original-image pixels) beside two baselines that ignore the image (the whole-image
box and the centre box), prints the table and writes ``results.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tg_data.box import Box
from tg_data.coords import render_box
from tg_eval.predictions import PredictionSet
from tg_eval.rec import rec_targets, score_rec
from tg_eval.shapes import shapes_samples
from tg_train.metrics import plot_loss_curve, read_metrics
from tg_train.pipeline import Pipeline, load_pipeline, run_pipeline
from tg_train.question_swap import landed_shape, swap_agreement, swapped_questions


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str

    def box(self, width: int, height: int) -> Box:
        if self.name == "whole":
            return Box.from_pixels(0, 0, width, height, width, height)
        return Box.from_pixels(width / 4, height / 4, 3 * width / 4, 3 * height / 4, width, height)


BASELINES = (
    Baseline("whole", "the whole image"),
    Baseline("center", "a centred box of half the image's width and height"),
)


def scale_pipeline(pipeline: Pipeline, scale: float) -> list[list[str]]:
    """Per-stage overrides that shrink every stage's steps (and the data) by ``scale``, for smoke runs."""
    from tg_train.recipe import load_recipe

    if scale >= 1:
        return [[] for _ in pipeline.stages]
    s = pipeline.shapes
    s.train, s.val, s.test = (max(8, round(n * scale)) if n else 0 for n in (s.train, s.val, s.test))
    if pipeline.towers.steps:
        pipeline.towers.steps = max(2, round(pipeline.towers.steps * scale))
    out = []
    for entry in pipeline.stages:
        steps = load_recipe(entry.recipe, entry.set, check_files=False).optim.max_steps or 100
        out.append([f"optim.max_steps={max(2, round(steps * scale))}", "checkpoint.every_steps=1000000"])
    return out


def overall(result: Any) -> dict[str, Any]:
    """The all-splits row of a REC result (the only row when there is one split)."""
    return result.rows.get("all") or next(iter(result.rows.values()))


def baseline_scores(samples: list[Any], split_name: str) -> dict[str, float]:
    targets = rec_targets(samples, default_split=split_name)
    out = {}
    for b in BASELINES:
        records = [{"id": t.id, "text": render_box(b.box(t.width, t.height))} for t in targets]
        row = overall(score_rec(targets, PredictionSet.from_records(records, source=b.name), name=b.name))
        out[b.name] = row["correct"] / row["n"]
    return out


def rec_breakdown(samples: list[Any], scenes: dict[str, Any], answers: Any) -> dict[str, Any]:
    """Acc@0.5 by the number of shapes in the scene, and where answers about several shapes land.

    An answer that overlaps no shape at IoU 0.5 sits between the shapes (the model has not chosen);
    one on another shape chose wrongly. The two call for different fixes, so both are counted.
    Answers are judged as tg-eval's REC scorer judges them (same parser, pixel IoU, threshold);
    ``answers`` gives an answer's text by question id (``.text(id)``, as a ``PredictionSet`` does).
    """
    from tg_data.coords import parse_box
    from tg_eval.rec import IOU_THRESHOLD

    by_shapes: dict[int, list[int]] = {}
    landed = {"asked_for": 0, "another_shape": 0, "no_shape": 0, "unparseable": 0}
    for sample in samples:
        scene = scenes[sample.meta["scene"]]
        box = parse_box(answers.text(sample.id) or "")
        found = landed_shape(box, scene, IOU_THRESHOLD)
        hit = found is not None and found == sample.meta["target"]
        n = len(scene.shapes)
        counts = by_shapes.setdefault(n, [0, 0])
        counts[0] += hit
        counts[1] += 1
        if n > 1:
            if box is None:
                landed["unparseable"] += 1
            elif hit:
                landed["asked_for"] += 1
            elif found is not None:
                landed["another_shape"] += 1
            else:
                landed["no_shape"] += 1
    return {
        "by_shapes": {str(n): {"n": t, "acc50": h / t} for n, (h, t) in sorted(by_shapes.items())},
        "several_shapes_answers": landed,
    }


def evaluate(pipeline: Pipeline, export: Path, out_dir: Path, threads: int | None = None) -> dict[str, Any]:
    """REC Acc@0.5 of the final export on the held-out split, and the baselines."""
    from tg_data.shapes.dataset import load_scenes
    from tg_eval.model import ModelPredictor
    from tg_eval.predictions import read_predictions
    from tg_eval.runner import run_shapes

    predictor = ModelPredictor.load(export, batch_size=pipeline.eval.batch_size, threads=threads)
    predictions = out_dir / "predictions-rec.jsonl"
    if predictions.exists():
        predictions.unlink()  # a fresh model answers afresh
    result, _ = run_shapes(
        "rec", pipeline.data_dir, predictor, predictions, split=pipeline.eval.split,
        batch_size=pipeline.eval.batch_size, progress=True, name="tiny",
    )
    samples = shapes_samples(pipeline.data_dir, pipeline.eval.split, "rec")
    base = baseline_scores(samples, f"shapes-{pipeline.eval.split}")
    scenes = {scene.id: scene for scene in load_scenes(str(pipeline.data_dir), pipeline.eval.split)}
    (out_dir / "rec.json").write_text(json.dumps(result.to_dict(), indent=2))
    row = overall(result)
    answers = read_predictions(predictions)
    swap = question_swap(predictor, samples, scenes, pipeline, answers, out_dir / "predictions-rec-swap.jsonl")
    return {
        "rec_acc50": row["correct"] / row["n"],
        "rec_n": row["n"],
        "rec_unparseable": row["unparseable"],
        "baseline_center_acc50": base["center"],
        "baseline_whole_acc50": base["whole"],
        **rec_breakdown(samples, scenes, answers),
        "question_swap": swap,
    }


def question_swap(
    predictor: Any, samples: list[Any], scenes: dict[str, Any], pipeline: Pipeline, answers: Any, out: Path
) -> dict[str, int]:
    """Ask every several-shape question again about another shape of its scene (``tg_train.question_swap``);
    ``answers``: the model's answers to the original questions (a ``PredictionSet``)."""
    from tg_eval.predictions import read_predictions
    from tg_eval.predictor import GenerationRequest, generate_predictions
    from tg_eval.rec import IOU_THRESHOLD
    from tg_eval.shapes import REC_MAX_NEW_TOKENS

    swaps = swapped_questions(samples, scenes)
    if out.exists():
        out.unlink()  # a fresh model answers afresh
    if not swaps:  # a world of one-shape scenes: nothing to swap
        return {"pairs": 0, "both_asked_for": 0, "same_shape": 0}
    requests = [GenerationRequest.from_sample(s, str(pipeline.data_dir), max_new_tokens=REC_MAX_NEW_TOKENS)
                for s in swaps]
    generate_predictions(predictor, requests, out, pipeline.eval.batch_size, progress=True,
                         description="question swap")
    return swap_agreement(samples, swaps, scenes, answers, read_predictions(out), IOU_THRESHOLD)


def results_table(results: dict[str, Any]) -> str:
    rows = [
        ("TinyGroundingGPT (tiny, stages 1-2-3)", results["rec_acc50"]),
        ("baseline: centre box", results["baseline_center_acc50"]),
        ("baseline: whole-image box", results["baseline_whole_acc50"]),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"REC Acc@0.5 on {results['rec_n']} held-out shapes-world questions", ""]
    lines += [f"| {'model':<{width}} | Acc@0.5 |", f"| {'-' * width} | ------: |"]
    lines += [f"| {name:<{width}} | {100 * acc:6.2f}% |" for name, acc in rows]
    if results.get("by_shapes"):
        lines.append("")
        lines.append("by shapes in the scene: " + ", ".join(
            f"{n}: {100 * row['acc50']:.1f}% of {row['n']}" for n, row in results["by_shapes"].items()
        ))
        landed = results["several_shapes_answers"]
        lines.append("answers about scenes of several shapes: " + ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in landed.items()
        ))
    swap = results.get("question_swap")
    if swap and swap["pairs"]:
        lines.append(
            f"asked again about another shape of the scene: both answers right {swap['both_asked_for']} "
            f"of {swap['pairs']}, the same shape for both {swap['same_shape']}"
        )
    lines.append("")
    lines.append(f"{results['minutes']:.1f} minutes in all; results in {results['output_dir']}/results.json")
    return "\n".join(lines)


def run_quickstart(
    pipeline_name: str = "quickstart", overrides: list[str] | None = None, scale: float = 1.0,
    threads: int | None = None,
) -> dict[str, Any]:
    start = time.time()
    pipeline = load_pipeline(pipeline_name, overrides)
    stage_overrides = scale_pipeline(pipeline, scale)
    for entry, extra in zip(pipeline.stages, stage_overrides, strict=True):
        entry.set = [*entry.set, *extra]
    trained = run_pipeline(pipeline)
    out_dir = Path(pipeline.output_dir)
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() != 0:
        return {}
    scores = evaluate(pipeline, trained[-1].export_dir, out_dir, threads=threads)
    records = [r for k in range(len(pipeline.stages)) for r in read_metrics(pipeline.stage_dir(k) / "metrics.jsonl")]
    plot_loss_curve(records, out_dir / "loss.png", title="quickstart: training loss, stages 1-2-3")
    results = {
        **scores,
        "minutes": (time.time() - start) / 60,
        "output_dir": str(out_dir),
        "stages": [
            {"stage": r.export_dir.parent.name, "steps": r.global_step, "final_loss": r.final_loss,
             "seconds": round(r.seconds, 1), "refused": r.refused}
            for r in trained
        ],
        "scale": scale,
    }
    towers = pipeline.towers_dir / "summary.json"
    if pipeline.towers.steps and towers.is_file():
        summary = json.loads(towers.read_text())
        results["towers"] = {k: summary[k] for k in ("seconds", "held_out", "held_out_split", "files")}
        results["towers"]["steps"] = summary["settings"]["steps"]
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results
