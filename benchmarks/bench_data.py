"""tg-data throughput against plain reference implementations, measured in the same run.

- ``convert_llava``: samples/s converting LLaVA-format JSON to tg-data Parquet (streamed, every record
  validated) against ``json.load`` of the whole file + a list of dicts + one ``polars`` write.
- ``shapes_scenes``: scenes/s writing a shapes-world dataset (generate, render, PNG, every task's
  samples, Parquet) against Pillow alone encoding the same, already rendered, images as PNG.

Prints one JSON object per comparison: ``{"name", "ours", "reference", "unit", "ratio"}``.
Run: ``uv run python benchmarks/bench_data.py [--quick]``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from tg_data.io import write_samples
from tg_data.readers import read_llava_json
from tg_data.shapes import ShapesConfig, render_scene, split_scenes, write_shapes_dataset

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def report(name: str, ours: float, reference: float, unit: str) -> None:
    print(json.dumps({"name": name, "ours": round(ours, 2), "reference": round(reference, 2), "unit": unit,
                      "ratio": round(ours / reference, 3)}), flush=True)


def llava_records(n: int) -> list[dict]:
    """LLaVA-v1.5-mix665k-like records: mostly image conversations of a few rounds, some text-only."""
    out = []
    for k in range(n):
        rounds = 1 + k % 4
        conv = []
        for r in range(rounds):
            q = f"What is the object number {r} doing in this picture, and where is it?"
            conv.append({"from": "human", "value": ("<image>\n" if r == 0 and k % 10 else "") + q})
            conv.append({"from": "gpt", "value": f"It is a cat {r} sitting on a red sofa near the window. " * 3})
        rec = {"id": f"{k:012d}", "conversations": conv}
        if k % 10:
            rec["image"] = f"coco/train2017/{k:012d}.jpg"
        out.append(rec)
    return out


def reference_convert(src: Path, dst: Path) -> int:
    with open(src) as f:
        records = json.load(f)
    rows = [
        {
            "id": str(r["id"]),
            "image": r.get("image"),
            "task": "vqa",
            "source": "llava",
            "turns": [{"role": ROLES[c["from"]], "text": c["value"]} for c in r["conversations"]],
        }
        for r in records
    ]
    pl.DataFrame(rows).write_parquet(dst)
    return len(rows)


def bench_convert_llava(tmp: Path, n: int, repeats: int) -> None:
    src = tmp / "llava.json"
    src.write_text(json.dumps(llava_records(n)))
    ours = best_time(lambda: write_samples(read_llava_json(str(src)), str(tmp / "ours.parquet")), repeats)
    reference = best_time(lambda: reference_convert(src, tmp / "reference.parquet"), repeats)
    assert pl.scan_parquet(tmp / "ours.parquet").select(pl.len()).collect().item() == n
    report("convert_llava", n / ours, n / reference, "samples/s")


def bench_shapes(tmp: Path, n: int, repeats: int) -> None:
    config = ShapesConfig()
    k = [0]

    def ours() -> None:
        k[0] += 1
        write_shapes_dataset(str(tmp / f"shapes{k[0]}"), {"train": n}, seed=0, config=config, pope_splits=())

    images = [render_scene(s) for s in split_scenes("train", n, 0, config)]

    def reference() -> None:
        for im in images:
            im.save(io.BytesIO(), format="PNG")

    t_ours = best_time(ours, repeats)
    t_ref = best_time(reference, repeats)
    report("shapes_scenes", n / t_ours, n / t_ref, "scenes/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for smoke tests")
    args = parser.parse_args()
    samples, scenes, repeats = (10_000, 200, 1) if args.quick else (100_000, 2_000, 3)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_convert_llava(tmp, samples, repeats)
        bench_shapes(tmp, scenes, repeats)
    print(f"({samples} LLaVA samples, {scenes} scenes, best of {repeats})", file=sys.stderr)


if __name__ == "__main__":
    main()
