"""Training logs: a rich progress bar, metrics as JSON Lines, TensorBoard when installed, a loss-curve PNG."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class MetricsLogger:
    """Rank 0's view of a run; every method is a no-op elsewhere."""

    def __init__(self, output_dir: str | Path, total_steps: int, enabled: bool, progress: bool, tensorboard: bool,
                 description: str = "train") -> None:
        self.enabled = enabled
        self.output_dir = Path(output_dir)
        self.console = Console(stderr=True)
        self.path = self.output_dir / "metrics.jsonl"
        self.progress: Progress | None = None
        self.writer = None
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if progress:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
                TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(description, total=total_steps, loss="-", lr="-", tps="-")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.output_dir / "tensorboard"))
            except ImportError:
                self.writer = None  # TensorBoard is optional

    def info(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)

    def advance_to(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": time.time(), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.progress is not None:
            self.progress.update(
                self.task, completed=record["step"], loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                tps=f"{record['tokens_per_s']:.0f}",
            )
        if self.writer is not None:
            for key in ("loss", "lr", "tokens_per_s"):
                self.writer.add_scalar(f"train/{key}", record[key], record["step"])

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_loss_curve(records: list[dict[str, Any]], out: str | Path, title: str = "training loss") -> Path | None:
    """A PNG of loss against step (stages drawn one after another when records carry a ``stage``)."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    stages: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        stages.setdefault(str(r.get("stage", "")), []).append(r)
    offset = 0
    for stage, rows in stages.items():
        xs = [offset + r["step"] for r in rows]
        ax.plot(xs, [r["loss"] for r in rows], label=f"stage {stage}" if stage else None, linewidth=1.2)
        offset = xs[-1]
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(stages):
        ax.legend()
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
