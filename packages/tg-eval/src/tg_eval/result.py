"""One result type for every benchmark, written as JSON and as a Markdown table.

Values are rounded once, here, to the decimals the paper's tables use (accuracies as percentages
with two decimals), so the JSON, the Markdown and ``tg-eval compare`` all show the same numbers.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from tg_eval.errors import EvalError

FORMAT = "tg-eval/1"


class Unit(StrEnum):
    PERCENT = "percent"  # 0-100, two decimals
    SCORE = "score"  # MME sums of percentages, two decimals
    RATING = "rating"  # judge ratings (1-5, 1-10), two decimals
    RECALL = "recall"  # retrieval R@K and rSum, percentages with one decimal as retrieval tables print them
    RANK = "rank"  # median / mean ranks, one decimal
    COUNT = "count"  # integers


DECIMALS: dict[str, int] = {Unit.PERCENT: 2, Unit.SCORE: 2, Unit.RATING: 2, Unit.RECALL: 1, Unit.RANK: 1, Unit.COUNT: 0}

#: Column headers for metric keys; a key not listed is shown as it is.
DISPLAY: dict[str, str] = {
    "acc": "Acc",
    "acc_plus": "Acc+",
    "score": "Score",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "yes_ratio": "Yes-ratio",
    "tp": "TP",
    "fp": "FP",
    "tn": "TN",
    "fn": "FN",
    "n": "N",
    "correct": "Correct",
    "unparseable": "Unparseable",
    "missing": "Missing",
    "relative": "Relative",
    "reference": "Reference",
    "model": "Model",
    "failures": "Judge failures",
    "quality": "Quality",
    "richness": "Richness",
    "accuracy": "Accuracy",
    "circular_acc": "Circular acc",
    "single_acc": "Single-pass acc",
    "rsum": "rSum",
    "i2t_r1": "I→T R@1",
    "i2t_r5": "I→T R@5",
    "i2t_r10": "I→T R@10",
    "t2i_r1": "T→I R@1",
    "t2i_r5": "T→I R@5",
    "t2i_r10": "T→I R@10",
    "i2t_medr": "I→T medr",
    "t2i_medr": "T→I medr",
}


def round_value(value: float | int, unit: str) -> float | int:
    if unit == Unit.COUNT:
        return int(value)
    return round(float(value), DECIMALS[unit])


def format_value(value: float | int | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == Unit.COUNT:
        return str(int(value))
    return f"{float(value):.{DECIMALS[unit]}f}"


@dataclass
class EvalResult:
    """A scored run: a table (``rows`` x metrics), headline numbers, counts of what was not scored.

    ``units`` gives the unit of every metric key used in ``rows`` and ``summary``. ``counts`` holds
    what a reader must know to trust the numbers (unmatched, unparseable, missing items), and
    ``notes`` explains them in words.
    """

    benchmark: str
    name: str
    units: dict[str, str]
    rows: dict[str, dict[str, float | int]]
    summary: dict[str, float | int]
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        for key in {k for row in self.rows.values() for k in row} | set(self.summary):
            if key not in self.units:
                raise ValueError(f"metric {key!r} of {self.benchmark} has no unit")
        self.rows = {r: {k: round_value(v, self.units[k]) for k, v in row.items()} for r, row in self.rows.items()}
        self.summary = {k: round_value(v, self.units[k]) for k, v in self.summary.items()}

    @property
    def columns(self) -> list[str]:
        """Metric keys in first-seen order across rows."""
        out: list[str] = []
        for row in self.rows.values():
            out.extend(k for k in row if k not in out)
        return out

    # serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "benchmark": self.benchmark,
            "name": self.name,
            "created": self.created,
            "units": self.units,
            "summary": self.summary,
            "rows": self.rows,
            "counts": self.counts,
            "notes": self.notes,
            "inputs": self.inputs,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "result") -> EvalResult:
        if d.get("format") != FORMAT:
            raise EvalError(f"{where}: not a tg-eval result (format {d.get('format')!r}, expected {FORMAT!r})")
        try:
            return cls(
                benchmark=d["benchmark"],
                name=d["name"],
                units=dict(d["units"]),
                rows={k: dict(v) for k, v in d["rows"].items()},
                summary=dict(d["summary"]),
                counts=dict(d.get("counts") or {}),
                notes=list(d.get("notes") or []),
                inputs=dict(d.get("inputs") or {}),
                details=dict(d.get("details") or {}),
                created=d.get("created") or "",
            )
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise EvalError(f"{where}: broken tg-eval result ({e!r}); re-run the scorer to rewrite it") from None

    def to_markdown(self) -> str:
        cols = self.columns
        lines = [f"### {self.benchmark}: {self.name}", ""]
        lines.append("| | " + " | ".join(DISPLAY.get(c, c) for c in cols) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in cols) + " |")
        for label, row in self.rows.items():
            cells = [format_value(row.get(c), self.units[c]) for c in cols]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if self.counts:
            lines.append("")
            lines.append("Counts: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.counts.items()))
        if self.notes:
            lines.append("")
            lines.append("Notes:")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def write(self, json_path: str | Path) -> tuple[Path, Path]:
        """Write ``json_path`` and the Markdown table beside it (same name, ``.md``)."""
        json_path = Path(json_path)
        md_path = json_path.with_suffix(".md")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, md_path


def load_result(path: str | Path) -> EvalResult:
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"{path}: no such result file (write one with a scorer's --json option)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise EvalError(f"{path}: not a tg-eval result (expected a JSON object)")
    return EvalResult.from_dict(data, where=str(path))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` as a percentage, 0 when there is nothing to divide."""
    return 100.0 * numerator / denominator if denominator else 0.0
