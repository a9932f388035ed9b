"""``tg-synth status RUN``: what a run made and what it cost, from its manifest and its cache.

The manifest is written when a run finishes; the cache is written as it goes. For a run that is
still going or was stopped, the cache's counts show how far it got.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tg_synth.cache import open_readonly


def read_status(run_dir: str | Path) -> dict[str, Any]:
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else None
    cache_path = root / "cache.sqlite"
    if manifest and manifest.get("config", {}).get("output", {}).get("cache"):
        cache_path = Path(manifest["config"]["output"]["cache"])
    cache: dict[str, Any] | None = None
    if cache_path.is_file():
        db = open_readonly(cache_path)
        try:
            cache = {}
            for step, status, n, calls, cost in db.execute(
                "SELECT step, status, COUNT(*), SUM(calls), SUM(cost) FROM results GROUP BY step, status"
            ):
                s = cache.setdefault(step, {"done": 0, "quarantined": 0, "calls": 0, "cost": 0.0})
                s[status] = n
                s["calls"] += calls or 0
                s["cost"] += cost or 0.0
        finally:
            db.close()
    if manifest is None and cache is None:
        raise FileNotFoundError(f"{run_dir}: neither manifest.json nor cache.sqlite here; is this a tg-synth run directory?")
    return {"run": str(root), "complete": manifest is not None, "manifest": manifest, "cache": cache}


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for k, c in enumerate(columns):
        t.add_column(c, justify="left" if k == 0 else "right")
    for r in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r])
    return t


def print_status(status: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    m = status["manifest"]
    if m is None:
        console.print(f"[bold]{status['run']}[/]: no manifest yet (the run is going, or was stopped before the end)")
        rows = [[s, v["done"], v["quarantined"], v["calls"], v["cost"]] for s, v in sorted(status["cache"].items())]
        console.print(_table("Cached steps", ["step", "done", "quarantined", "calls", "cost"], rows))
        return
    console.print(f"[bold]{status['run']}[/]: {m['items']['total']} images, {m['items']['with_samples']} with samples; "
                  f"image paths {m['image_paths']}" + (f" {m['image_root']}" if m["image_root"] else ""))
    steps = m["steps"]
    rows = [[s, v["done"], v["quarantined"], v["blocked"], v["skipped"], v["pending"], v["calls"],
             v["prompt_tokens"], v["completion_tokens"], v["cost"]] for s, v in steps.items()]
    console.print(_table("Steps (per image)", ["step", "done", "quarantined", "blocked", "skipped", "pending",
                                               "calls", "prompt tok", "completion tok", "cost"], rows))
    tasks = [[f"stage {2 if t in m['stage2']['tasks'] else 3}", t, n] for t, n in m["tasks"].items()]
    console.print(_table("Samples per task", ["stage", "task", "samples"], tasks))
    console.print(_table("Filtered, by reason", ["reason", "count"], sorted(m["filtered"].items())))
    console.print(_table("Failures, by reason", ["reason", "count"], list(m["failures"]["by_reason"].items())))
    c = m["cost"]
    console.print(f"cost {c['total']:.4f} ({c['prompt_tokens']} prompt + {c['completion_tokens']} completion tokens, "
                  f"{c['calls']} chat calls); stage 2: {m['stage2']['samples']} samples, stage 3: "
                  f"{m['stage3']['samples']} samples; {m['crops']['count']} object-image crops")
    if status["cache"] is not None:
        cached = {s: v["done"] + v["quarantined"] for s, v in status["cache"].items()}
        console.print(f"cache: {sum(cached.values())} finished step results")
