"""Training steps with warm pixel and feature caches against the same steps without them, same run.

The quickstart's stage 2 reads each of its 8,000 scenes a dozen times: single REC questions on
80-pixel images, the model 128 wide with 2x2-merged patches, 32 samples a step, packed. Every
sample is decoded, processed and run through the frozen towers again unless
``[batch] image_cache_mb`` and ``feature_cache_mb`` keep them. This measures one training step
as the trainer takes it in its own process (``num_workers = 0``): the samples encoded by the
dataset, collated (packed), forward, backward, AdamW, on a shapes world written here.

- ours: both caches on and warm (every image seen once before timing, as after the first epoch);
- reference: both off, every image decoded and encoded afresh.

The two take turns in blocks of steps over the same batches; medians are reported. Rates are samples
a second (higher is better).

    uv run python benchmarks/bench_cache.py [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tg_data.shapes import ShapesConfig, TaskMix, write_shapes_dataset
from tg_model.inputs import SampleEncoder
from tg_model.presets import build_model
from tg_train.data import Collator, MixtureDataset, estimate_length, plan_epoch, read_source
from tg_train.recipe import DataSource
from tg_train.trainer import training_inputs

QUICKSTART_LLM = {
    "text_hidden_size": 128, "text_intermediate_size": 256, "text_num_attention_heads": 4,
    "text_num_key_value_heads": 1, "spatial_merge_size": 2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scenes and steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scenes, blocks, per_block = (60, 2, 3) if args.quick else (400, 8, 15)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_shapes_dataset(str(root), {"train": scenes}, seed=0, config=ShapesConfig(image_size=80, max_shapes=4),
                             split_mixes={"train": TaskMix(counts={"rec": 1}, rec_rounds=4)})
        samples = read_source(DataSource(path=str(root / "train.parquet"), tasks=["rec"], split_rounds=True))
        model, tokenizer = build_model("tiny", seed=0, **QUICKSTART_LLM)
        model.encoder.freeze()
        model.train()

        def dataset(image_cache_mb: float) -> MixtureDataset:
            encoder = SampleEncoder(tokenizer, model.config, model.encoder.image_size, model.image_tokens,
                                    image_root=str(root), max_length=512, image_cache_mb=image_cache_mb)
            return MixtureDataset(samples, [str(root)] * len(samples), {str(root): encoder})

        plain, cached = dataset(0), dataset(1024)
        lengths = [estimate_length(s, model.image_tokens, model.object_tokens) for s in samples]
        plan = plan_epoch(lengths, [True] * len(samples), args.batch, 1, seed=0, epoch=0, group_by_length=True)
        collator = Collator(tokenizer.pad_token_id, packing=True, max_length=512)
        optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        cache = model.use_feature_cache(1024)
        with torch.no_grad():  # warm: every image of the timed batches seen once
            for batch_ids in plan:
                model.image_features(collator([cached[i] for i in batch_ids])["pixel_values"])

        def step(data: MixtureDataset, batch_ids: list[int]) -> float:
            start = time.perf_counter()
            batch = collator([data[i] for i in batch_ids])
            loss = model(**training_inputs(batch, torch.device("cpu"), torch.float32)).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        times: dict[str, list[float]] = {"cached": [], "uncached": []}
        k = 0
        for block in range(blocks):
            for mode in ("cached", "uncached") if block % 2 == 0 else ("uncached", "cached"):
                model.feature_cache = cache if mode == "cached" else None
                data = cached if mode == "cached" else plain
                for _ in range(per_block):
                    times[mode].append(step(data, plan[k % len(plan)]))
                    k += 1
        ours = args.batch / statistics.median(times["cached"])
        reference = args.batch / statistics.median(times["uncached"])
        print(json.dumps({"name": "train_step_samples_per_s_warm_caches", "ours": round(ours, 1),
                          "reference": round(reference, 1), "unit": "samples/s", "ratio": round(ours / reference, 3),
                          "batch": args.batch, "threads": args.threads, "steps_each": blocks * per_block // 2}))


if __name__ == "__main__":
    main()
