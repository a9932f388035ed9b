"""Runs side by side: one Markdown table of headline numbers and one bar chart.

Headline numbers (each result's ``summary``) become rows "benchmark: metric"; each run name is a
column, so one model's POPE, MME and REC results line up under its name. Two results of the same
benchmark under the same name become separate columns. The chart draws one panel per unit so
percentages and MME's 0-2000 scores never share an axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tg_eval.errors import EvalError
from tg_eval.result import DISPLAY, EvalResult, Unit, format_value


def run_labels(results: Sequence[EvalResult]) -> list[str]:
    """Each result's column: its run name, suffixed where that name already has this benchmark."""
    labels: list[str] = []
    taken: set[tuple[str, str]] = set()
    for r in results:
        label, n = r.name, 2
        while (label, r.benchmark) in taken:
            label, n = f"{r.name} ({n})", n + 1
        taken.add((label, r.benchmark))
        labels.append(label)
    return labels


def _columns(results: Sequence[EvalResult]) -> list[str]:
    return list(dict.fromkeys(run_labels(results)))


def _rows(results: Sequence[EvalResult]) -> list[tuple[str, str, str]]:
    """(benchmark, metric, unit) in first-seen order."""
    out: list[tuple[str, str, str]] = []
    for r in results:
        for metric in r.summary:
            key = (r.benchmark, metric, r.units[metric])
            if key not in out:
                out.append(key)
    return out


def _grid(results: Sequence[EvalResult]) -> dict[tuple[str, str, str], float]:
    """(column, benchmark, metric) -> value."""
    return {
        (label, r.benchmark, metric): float(v)
        for label, r in zip(run_labels(results), results, strict=True)
        for metric, v in r.summary.items()
    }


def compare_table(results: Sequence[EvalResult]) -> str:
    if not results:
        raise EvalError("nothing to compare: give at least one result file")
    columns, grid = _columns(results), _grid(results)
    lines = ["| benchmark | metric | " + " | ".join(columns) + " |", "| --- | --- | " + " | ".join("---:" for _ in columns) + " |"]
    for bench, metric, unit in _rows(results):
        cells = [format_value(grid.get((c, bench, metric)), unit) for c in columns]
        lines.append(f"| {bench} | {DISPLAY.get(metric, metric)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_chart(results: Sequence[EvalResult], path: str | Path, title: str = "tg-eval compare") -> Path:
    """A grouped bar chart (one bar per run) of every headline number, one panel per unit."""
    from matplotlib.figure import Figure

    if not results:
        raise EvalError("nothing to compare: give at least one result file")
    columns, grid = _columns(results), _grid(results)
    rows = _rows(results)
    units = [u for u in (Unit.PERCENT, Unit.RECALL, Unit.SCORE, Unit.RATING, Unit.RANK, Unit.COUNT) if any(r[2] == u for r in rows)]
    panels = [(u, [r for r in rows if r[2] == u]) for u in units]
    width = max(6.0, 0.35 * len(columns) * max(len(p[1]) for p in panels) + 2)
    fig = Figure(figsize=(min(width, 40), 3.2 * len(panels) + 0.6), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    bar = 0.8 / len(columns)
    for ax, (unit, metrics) in zip(axes, panels, strict=True):
        xs = list(range(len(metrics)))
        for j, label in enumerate(columns):
            values = [grid.get((label, b, m)) for b, m, _ in metrics]
            heights = [0.0 if v is None else v for v in values]
            pos = [x - 0.4 + bar * (j + 0.5) for x in xs]
            bars = ax.bar(pos, heights, bar, label=label)
            for rect, v in zip(bars, values, strict=True):
                if v is not None:
                    ax.annotate(format_value(v, unit), (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                                ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points",
                                rotation=90 if len(columns) > 2 else 0)
        ax.set_xticks(xs, [f"{b}\n{DISPLAY.get(m, m)}" for b, m, _ in metrics], fontsize=8)
        ax.set_ylabel(str(unit))
        if unit in (Unit.PERCENT, Unit.RECALL) and all(m[1] != "rsum" for m in metrics):
            ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
