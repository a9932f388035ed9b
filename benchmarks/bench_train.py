"""Training throughput: tg-train's step against HF LlavaForConditionalGeneration at equal dims, same run.

Both sides train the ``tiny`` preset's dims (the reference built as ``bench_model.py`` builds it: a
CLIP vision tower as wide as our encoder, LLaVA's projector, our Qwen2 text config and weights) on
the same shapes-world samples: captions, multi-round REC, REG, relations, grounded conversations and
grounded descriptions (the tasks HF Llava can take: no object images), a realistic length spread.
Samples are encoded once beforehand, so neither side pays for image decoding. Every side steps
through a DeepSpeed ZeRO-2 engine built from the same recipe (AdamW, clipping; micro-batches of
``--micro`` samples, 4 accumulated per optimiser step), LLM and projector trained, encoders frozen,
as in stages 1b-3.

- ``tokens_per_s_unpacked``: tg-train's epoch plan with ``group_by_length`` (each optimiser step's
  samples sorted by length before they are cut into micro-batches, as LLaVA's modality-length
  sampler), padded.
- ``tokens_per_s_packed``: tg-train with ``packing = true, group_by_length = false``: random
  micro-batches, each packed into rows no longer than its longest sample, position ids restarting
  per sample (a block mask keeps samples apart).
- reference: random micro-batches of the same size, right-padded (HF's ``DataCollator`` and the
  Trainer's default random sampler).

Throughput counts real tokens (the samples' own, images' placeholder rows included; no padding).
The passes take turns, several rounds; medians are reported (the machine is shared). On a CPU shared
with other work, ``--threads 1`` avoids OpenMP threads waiting on each other, which otherwise
dominates small ops and hides the differences being measured.

    uv run python benchmarks/bench_train.py [--quick] [--micro 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import check_same_language_model, llava_like

from tg_data.io import read_samples
from tg_data.shapes import ShapesConfig, TaskMix, write_shapes_dataset
from tg_model.inputs import EncodedSample, SampleEncoder, collate
from tg_model.presets import build_model
from tg_train.data import Collator, plan_epoch
from tg_train.engine import create_engine, deepspeed_config, init_distributed
from tg_train.recipe import Recipe
from tg_train.trainer import apply_freezing, training_inputs

TASKS = ("caption", "rec", "reg", "relation", "grounded_conv", "grounded_desc")


def shapes_samples(root: Path, scenes: int) -> list:
    """A training split with multi-round REC (as the quickstart trains on), without object-image tasks."""
    mix = TaskMix(counts={t: (3 if t == "rec" else 1) for t in TASKS}, rec_rounds=4)
    write_shapes_dataset(str(root), {"train": scenes}, seed=0, config=ShapesConfig(image_size=64, max_shapes=4),
                         split_mixes={"train": mix})
    return [s for s in read_samples(str(root / "train.parquet")) if "<object>" not in "".join(t.text for t in s.turns)]


def encode_all(model, tokenizer, samples: list, root: Path, max_length: int) -> list[EncodedSample]:
    encoder = SampleEncoder(tokenizer, model.config, model.encoder.image_size, model.image_tokens,
                            image_root=str(root), max_length=max_length)
    return [encoder.encode(s) for s in samples]


def our_batches(encoded: list[EncodedSample], micro: int, per_step: int, packing: bool, pad_id: int,
                max_length: int) -> list[dict]:
    """tg-train's plan and collator: grouped by length and padded, or random and packed."""
    lengths = [s.length for s in encoded]
    plan = plan_epoch(lengths, [True] * len(encoded), micro, per_step, seed=0, epoch=0, group_by_length=not packing)
    collator = Collator(pad_id, packing=packing, max_length=max_length)
    return [collator([encoded[i] for i in b]) | {"real_tokens": sum(lengths[i] for i in b)} for b in plan]


def reference_batches(encoded: list[EncodedSample], micro: int, per_step: int, pad_id: int) -> list[dict]:
    order = np.random.default_rng(0).permutation(len(encoded))
    order = np.concatenate([order, order[: (-len(order)) % (micro * per_step)]])  # whole steps, as ours
    out = []
    for k in range(0, len(order), micro):
        batch = collate([encoded[i] for i in order[k : k + micro]], pad_id)
        out.append({k: batch[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values")}
                   | {"real_tokens": int(batch["attention_mask"].sum())})
    return out


def recipe(micro: int, per_step: int, max_length: int) -> Recipe:
    r = Recipe(stage="2")
    r.model.preset = "tiny"
    r.optim.lr = 1e-5
    r.batch.micro = micro
    r.batch.global_size = micro * per_step
    r.batch.max_length = max_length
    return r


def reference_engine(model: torch.nn.Module, r: Recipe, world: int) -> Any:
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=r.optim.lr, betas=tuple(r.optim.betas), eps=r.optim.eps)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(r, world, False),
                                      dist_init_required=False)
    return engine


def one_pass(engine: Any, batches: list[dict], to_inputs: Callable[[dict], dict]) -> tuple[float, int]:
    """Seconds and real tokens for one pass of optimiser steps over ``batches``."""
    tokens = 0
    start = time.perf_counter()
    for batch in batches:
        loss = engine(**to_inputs(batch)).loss
        engine.backward(loss)
        engine.step()
        tokens += batch["real_tokens"]
    return time.perf_counter() - start, tokens


def padding_share(batches: list[dict]) -> float:
    total = sum(b["input_ids"].numel() for b in batches)
    return 1 - sum(b["real_tokens"] for b in batches) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scenes and rounds")
    parser.add_argument("--scenes", type=int, default=None, help="shapes scenes (default 24, 12 quick)")
    parser.add_argument("--micro", type=int, default=8, help="samples per micro-batch")
    parser.add_argument("--accumulate", type=int, default=4, help="micro-batches per optimiser step")
    parser.add_argument("--rounds", type=int, default=None, help="timed passes per side (default 3, 2 quick)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args()
    scenes = args.scenes or (12 if args.quick else 24)
    max_length = 512
    rounds = args.rounds or (2 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours, tokenizer = build_model("tiny", seed=0)
        reference = llava_like(ours)
        samples = shapes_samples(root, scenes)
        encoded = encode_all(ours, tokenizer, samples, root, max_length=max_length)

    r = recipe(args.micro, args.accumulate, max_length)
    dist = init_distributed()
    apply_freezing(ours, r.train)
    reference.model.vision_tower.requires_grad_(False)
    pad = tokenizer.pad_token_id
    batches = {
        "unpacked": our_batches(encoded, args.micro, args.accumulate, False, pad, max_length),
        "packed": our_batches(encoded, args.micro, args.accumulate, True, pad, max_length),
        "reference": reference_batches(encoded, args.micro, args.accumulate, pad),
    }
    text = tokenizer(["the red circle left of the blue square"], return_tensors="pt")
    check_same_language_model(ours.eval(), reference.eval(), dict(text))
    ours_engine, _ = create_engine(ours, r, dist, total_steps=10_000)
    ref_engine = reference_engine(reference, r, dist.world)
    ours_engine.train()
    ref_engine.train()

    cpu = torch.device("cpu")
    ours_inputs = lambda b: training_inputs(b, cpu, torch.float32)  # noqa: E731
    ref_inputs = lambda b: {k: b[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values")}  # noqa: E731
    passes = {
        "unpacked": lambda: one_pass(ours_engine, batches["unpacked"], ours_inputs),
        "packed": lambda: one_pass(ours_engine, batches["packed"], ours_inputs),
        "reference": lambda: one_pass(ref_engine, batches["reference"], ref_inputs),
    }
    for name, batches_ in batches.items():  # warm-up: one optimiser step each
        one_pass(ours_engine if name != "reference" else ref_engine, batches_[: args.accumulate],
                 ref_inputs if name == "reference" else ours_inputs)
    rates: dict[str, list[float]] = {k: [] for k in passes}
    names = list(passes)
    for round_ in range(rounds):
        for name in names[round_ % 3 :] + names[: round_ % 3]:  # each side takes each position in turn
            seconds, tokens = passes[name]()
            rates[name].append(tokens / seconds)
    median = {k: statistics.median(v) for k, v in rates.items()}
    lengths = [s.length for s in encoded]
    shape = (f"tiny,{len(encoded)} samples,len {min(lengths)}-{int(np.median(lengths))}-{max(lengths)},"
             f"micro={args.micro}x{args.accumulate},cpu,threads={torch.get_num_threads()}")
    for name in ("unpacked", "packed"):
        print(json.dumps({
            "name": f"tokens_per_s_{name}[{shape}]",
            "ours": median[name],
            "reference": median["reference"],
            "unit": "tokens/s",
            "ratio": median[name] / median["reference"],
            "ours_padding": round(padding_share(batches[name]), 3),
            "reference_padding": round(padding_share(batches["reference"]), 3),
            "ours_rows": sum(b["input_ids"].shape[0] for b in batches[name]),
            "reference_rows": sum(b["input_ids"].shape[0] for b in batches["reference"]),
        }), flush=True)


if __name__ == "__main__":
    main()
