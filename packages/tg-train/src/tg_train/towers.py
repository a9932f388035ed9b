"""Tower pretraining on the shapes world: the step the tiny preset's towers never had.

The method freezes *pretrained* towers (CLIP, DINOv2): they already say what is where, and the
projector and LLM learn to read them. The tiny preset's towers have no published weights, and
frozen random towers leave the LLM to discover objects in random features: on the shapes world
the quickstart then stays at the centre box's level for thousands of steps. This step stands in
for the towers' own pretraining, before stage 1: every patch learns, through a linear head that
is thrown away afterwards, whether an object covers it, that object's colour, kind and size, and
its box. The towers are then saved in their libraries' checkpoint layouts and loaded, frozen, by
the first stage like any local checkpoint (``model.encoder_weights``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tg_data.shapes.scene import COLOURS, KINDS, SIZES, Scene
from tg_train.engine import lr_lambda
from tg_train.pipeline import TowersSection


@dataclass
class PatchTargets:
    """Per-patch labels of a batch of scenes, on the towers' ``grid x grid`` patch grid."""

    covered: torch.Tensor  # (N, P) bool: a shape's box holds the patch centre
    colour: torch.Tensor  # (N, P) long, valid where covered
    kind: torch.Tensor
    size: torch.Tensor
    box: torch.Tensor  # (N, P, 4) the covering shape's box, padded-square coordinates

    def select(self, rows: torch.Tensor) -> PatchTargets:
        """The labels of the scenes at ``rows``."""
        return PatchTargets(self.covered[rows], self.colour[rows], self.kind[rows], self.size[rows], self.box[rows])


def patch_targets(scenes: list[Scene], grid: int) -> PatchTargets:
    """Which shape covers each patch centre (the smaller one where boxes overlap), and its labels."""
    n, p = len(scenes), grid * grid
    centre = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    cy, cx = (t.flatten() for t in torch.meshgrid(centre, centre, indexing="ij"))
    out = PatchTargets(
        covered=torch.zeros(n, p, dtype=torch.bool), colour=torch.zeros(n, p, dtype=torch.long),
        kind=torch.zeros(n, p, dtype=torch.long), size=torch.zeros(n, p, dtype=torch.long), box=torch.zeros(n, p, 4),
    )
    colours, kinds, sizes = list(COLOURS), list(KINDS), list(SIZES)
    for row, scene in enumerate(scenes):
        boxes = scene.boxes
        by_area = sorted(range(len(scene.shapes)), key=lambda i: -boxes[i].area)
        for i in by_area:  # larger first, so smaller shapes own the patches they share
            b, shape = boxes[i], scene.shapes[i]
            inside = (cx >= b.x1) & (cx <= b.x2) & (cy >= b.y1) & (cy <= b.y2)
            out.covered[row, inside] = True
            out.colour[row, inside] = colours.index(shape.colour)
            out.kind[row, inside] = kinds.index(shape.kind)
            out.size[row, inside] = sizes.index(shape.size)
            out.box[row, inside] = torch.tensor(b.to_list())
    return out


class PatchHeads(nn.Module):
    """One linear map from fused patch features to every target's logits and the box."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.sizes = (2, len(COLOURS), len(KINDS), len(SIZES), 4)
        self.linear = nn.Linear(width, sum(self.sizes))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(features).split(self.sizes, dim=-1)


def _losses_and_scores(
    heads: tuple[torch.Tensor, ...], t: PatchTargets, box_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    obj, colour, kind, size, box = heads
    cov = t.covered
    loss = F.cross_entropy(obj.flatten(0, 1), cov.long().flatten())
    scores = {"object": (obj.argmax(-1) == cov.long()).float().mean().item()}
    if cov.any():
        for name, logits, target in (("colour", colour, t.colour), ("kind", kind, t.kind), ("size", size, t.size)):
            loss = loss + F.cross_entropy(logits[cov], target[cov])
            scores[name] = (logits[cov].argmax(-1) == target[cov]).float().mean().item()
        l1 = (box[cov] - t.box[cov]).abs().mean()
        loss = loss + box_weight * l1
        scores["box_l1"] = l1.item()
    return loss, scores


def _load_split(data_dir: Path, split: str, limit: int | None, image_size: int) -> tuple[torch.Tensor, list[Scene]]:
    from PIL import Image

    from tg_data.shapes.dataset import image_path, load_scenes
    from tg_encoders.processing import ImageProcessor

    path = data_dir / "scenes" / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"tower pretraining needs shapes-world scenes at {path}; generate the world first "
            "(a pipeline's [shapes] section, or `tg-data shapes`)"
        )
    scenes = load_scenes(str(data_dir), split)
    scenes = scenes[:limit] if limit else scenes
    processor = ImageProcessor(image_size)
    pixels = []
    for scene in scenes:
        with Image.open(data_dir / image_path(scene)) as im:
            pixels.append(processor.process_one(im.convert("RGB"))[0])
    return torch.stack(pixels), scenes


def _finished_run(path: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of an earlier run with the same settings, specs and data, if there is one."""
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return done if all(done.get(k) == v for k, v in wanted.items()) else None


def pretrain_towers(
    section: TowersSection, data_dir: str | Path, out_dir: str | Path, preset: str = "tiny",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the preset's towers on the shapes world's scenes; write ``tower-<i>.safetensors``.

    Returns the summary (also ``summary.json``): steps, seconds, the files, and per-target
    accuracies on held-out scenes. A finished run with the same settings is reused.
    """
    from tg_encoders.towers import save_tower_weights
    from tg_model.presets import build_model
    from tg_train.metrics import MetricsLogger

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    model, _ = build_model(preset, seed=section.seed, **(overrides or {}))
    encoder = model.encoder
    wanted = {"settings": asdict(section), "specs": json.loads(json.dumps(encoder.specs())), "data": str(data_dir)}
    summary_path = out_dir / "summary.json"
    done = _finished_run(summary_path, wanted)
    if done is not None:
        return done

    start = time.time()
    pixels, scenes = _load_split(data_dir, "train", None, encoder.image_size)
    targets = patch_targets(scenes, encoder.grid)
    held_split = "val" if (data_dir / "scenes" / "val.jsonl").is_file() else "test"
    held_pixels, held_scenes = _load_split(data_dir, held_split, section.eval_scenes, encoder.image_size)
    held_targets = patch_targets(held_scenes, encoder.grid)

    encoder.unfreeze()
    encoder.train()
    heads = PatchHeads(encoder.hidden_size)
    params = [*encoder.parameters(), *heads.parameters()]
    optimiser = torch.optim.AdamW(params, lr=section.lr, weight_decay=0.0)

    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_lambda(step, section.steps, section.warmup_steps, "cosine", 0.0)
    )
    rng = np.random.default_rng(section.seed)
    batch = min(section.batch, len(scenes))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.jsonl").unlink(missing_ok=True)
    logger = MetricsLogger(out_dir, section.steps, enabled=True, progress=False, tensorboard=False)
    logger.info(f"towers: pretraining {len(encoder.towers)} towers on {len(scenes)} scenes for {section.steps} steps")
    for step in range(1, section.steps + 1):
        idx = torch.from_numpy(rng.choice(len(scenes), batch, replace=False))
        loss, scores = _losses_and_scores(heads(encoder(pixels[idx])), targets.select(idx), section.box_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        schedule.step()
        if step % section.log_every == 0 or step == section.steps:
            record = {"stage": "towers", "step": step, "loss": loss.item(), "lr": schedule.get_last_lr()[0], **scores}
            logger.log(record)
            logger.info("towers " + " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in record.items() if k != "stage"))
    encoder.eval()
    with torch.no_grad():
        _, held = _losses_and_scores(heads(encoder(held_pixels)), held_targets, section.box_weight)
    encoder.freeze()
    files = [str(save_tower_weights(tower, out_dir / f"tower-{i}.safetensors")) for i, tower in enumerate(encoder.towers)]
    summary = {**wanted, "files": files, "seconds": round(time.time() - start, 1), "held_out": held,
               "held_out_split": held_split, "held_out_scenes": len(held_scenes)}
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary
