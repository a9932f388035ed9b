"""tg-synth throughput against the concurrency limit of a chat endpoint.

``throughput_vs_limit``: the pipeline (all five chat steps, oracle detector) runs against the loopback
OpenAI-compatible endpoint, served by a separate process with a fixed latency L per call. With C
calls in flight, no client can exceed C / L calls per second: that limit is the reference, and the
ratio says how much of it the pipeline reaches. Target: >= 0.8.

    uv run python benchmarks/bench_synth.py [--quick] [--concurrency 32] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tg_data.shapes import write_shapes_dataset
from tg_synth.config import config_from_dict
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


def throughput_vs_limit(scenes: int, concurrency: int, latency: float) -> dict:
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
        finally:
            proc.kill()
            proc.wait()
    calls = manifest["cost"]["calls"]
    seconds = manifest["live_seconds"]
    ours = calls / seconds
    limit = concurrency / latency
    print(f"# {calls} chat calls in {seconds:.2f} s over {scenes} images (C={concurrency}, latency {latency * 1000:.0f} ms)",
          file=sys.stderr)
    return {"name": "throughput_vs_limit", "ours": round(ours, 1), "reference": round(limit, 1), "unit": "calls/s",
            "ratio": round(ours / limit, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller run for smoke tests")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    scenes = 120 if args.quick else 600
    print(json.dumps(throughput_vs_limit(scenes, args.concurrency, args.latency)))


if __name__ == "__main__":
    main()
