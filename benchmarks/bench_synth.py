"""tg-synth throughput against the concurrency limit of a chat endpoint.

``throughput_vs_limit``: the pipeline (all five chat steps, oracle detector) runs against the loopback
OpenAI-compatible endpoint, served by a separate process with a fixed latency L per call. With C
calls in flight, no client can exceed C / L calls per second: that limit is the reference, and the
ratio says how much of it the pipeline reaches. Target: >= 0.8.

``pipeline_vs_client``: the same pipeline against the chat client alone (the same recorded requests
sent again through ``OpenAIChat`` with the same C, no pipeline around it), in the same run. On a
shared machine both move with the load; this ratio is the pipeline's own overhead.

    uv run python benchmarks/bench_synth.py [--quick] [--concurrency 32] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tg_data.shapes import write_shapes_dataset
from tg_synth.backends.base import ChatRequest
from tg_synth.backends.openai_chat import OpenAIChat
from tg_synth.config import ChatConfig, config_from_dict
from tg_synth.images import ImageRef
from tg_synth.prompting import get_template
from tg_synth.run import run


def start_endpoint(shapes_root: Path, latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tg_synth.cli", "serve-oracle", str(shapes_root), "--latency", str(latency)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"the loopback endpoint did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split("listening on ", 1)[1].strip()


async def _client_only(url: str, concurrency: int, requests: list) -> float:
    """Calls/s of the bare chat client sending ``requests`` with ``concurrency`` in flight."""
    client = OpenAIChat(ChatConfig(kind="openai", base_url=url, model="shapes-oracle", api_key_env="",
                                   concurrency=concurrency, timeout_s=30.0))
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(client.complete(r) for r in requests))
        return len(requests) / (time.perf_counter() - t0)
    finally:
        await client.aclose()


def _requests(root: Path, scenes: int) -> list[ChatRequest]:
    """Recognition requests (image attached) and description requests (text only), as the pipeline sends them."""
    from tg_data.coords import render_box
    from tg_data.shapes import load_scenes
    from tg_data.shapes.dataset import image_path

    out = []
    for k, scene in enumerate(load_scenes(str(root), "train")[:scenes]):
        if k % 2 == 0:
            url = ImageRef.open(str(root / image_path(scene))).data_url()
            inputs = {"image_id": scene.id, "max_objects": 20}
            out.append(ChatRequest("recognize", get_template("recognize").messages(inputs, url, max_objects=20),
                                   f"bench-{k}", inputs))
        else:
            objs = [{"id": j + 1, "name": s.name, "box": render_box(scene.box(j))} for j, s in enumerate(scene.shapes)]
            inputs = {"image_id": scene.id, "objects": objs, "relations": []}
            out.append(ChatRequest("describe", get_template("describe").messages(inputs), f"bench-{k}", inputs))
    return out


def throughput(scenes: int, concurrency: int, latency: float) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "shapes"
        write_shapes_dataset(str(root), {"train": scenes}, seed=0, pope_splits=())
        proc, url = start_endpoint(root, latency)
        try:
            cfg = config_from_dict({
                "progress": False,
                "input": {"kind": "shapes", "shapes_root": str(root)},
                "backends": {"mllm": {"kind": "openai", "base_url": url, "model": "shapes-oracle", "api_key_env": "",
                                      "concurrency": concurrency, "timeout_s": 30.0}},
                "output": {"dir": str(Path(tmp) / "out")},
            })
            manifest = run(cfg)
            calls = manifest["cost"]["calls"]
            client = asyncio.run(_client_only(url, concurrency, _requests(root, scenes) * (calls // scenes + 1)))
        finally:
            proc.kill()
            proc.wait()
    seconds = manifest["live_seconds"]
    ours = calls / seconds
    limit = concurrency / latency
    print(f"# {calls} chat calls in {seconds:.2f} s over {scenes} images (C={concurrency}, latency {latency * 1000:.0f} ms)",
          file=sys.stderr)
    return [
        {"name": "throughput_vs_limit", "ours": round(ours, 1), "reference": round(limit, 1), "unit": "calls/s",
         "ratio": round(ours / limit, 3)},
        {"name": "pipeline_vs_client", "ours": round(ours, 1), "reference": round(client, 1), "unit": "calls/s",
         "ratio": round(ours / client, 3)},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller run for smoke tests")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    scenes = 120 if args.quick else 600
    for line in throughput(scenes, args.concurrency, args.latency):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
