from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tg_eval.compare import compare_chart, compare_table, run_labels
from tg_eval.errors import EvalError
from tg_eval.result import EvalResult, Unit, load_result


def pope_like(name: str, acc: float) -> EvalResult:
    return EvalResult(
        benchmark="pope",
        name=name,
        units={"acc": Unit.PERCENT, "n": Unit.COUNT, "mean_acc": Unit.PERCENT},
        rows={"random": {"acc": acc, "n": 3000}},
        summary={"mean_acc": acc},
        counts={"unanswered": 2},
        notes=["two questions have no answer"],
    )


def test_values_are_rounded_to_the_papers_decimals() -> None:
    r = EvalResult("mme", "x", {"score": Unit.SCORE, "medr": Unit.RANK, "n": Unit.COUNT, "acc": Unit.PERCENT},
                   rows={"a": {"score": 1510.7049, "medr": 2.25, "n": 7.0, "acc": 87.34567}}, summary={"acc": 87.34567})
    assert r.rows["a"] == {"score": 1510.7, "medr": 2.2, "n": 7, "acc": 87.35}
    md = r.to_markdown()
    assert "| a | 1510.70 | 2.2 | 7 | 87.35 |" in md  # fixed decimals in the table, 2 for percentages


def test_every_metric_needs_a_unit() -> None:
    with pytest.raises(ValueError, match="no unit"):
        EvalResult("x", "y", {}, rows={"r": {"acc": 1.0}}, summary={})


def test_json_and_markdown_round_trip(tmp_path: Path) -> None:
    r = pope_like("base", 85.123)
    j, m = r.write(tmp_path / "out" / "pope.json")
    assert m.name == "pope.md" and "| random | 85.12 | 3000 |" in m.read_text()
    assert "Counts: unanswered 2" in m.read_text() and "- two questions have no answer" in m.read_text()
    back = load_result(j)
    assert back.rows == r.rows and back.summary == r.summary and back.notes == r.notes
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(EvalError, match="not a tg-eval result"):
        load_result(tmp_path / "bad.json")


def test_compare_table_and_chart(tmp_path: Path) -> None:
    mme = EvalResult("mme", "base", {"perception": Unit.SCORE, "cognition": Unit.SCORE, "score": Unit.SCORE},
                     rows={"existence": {"score": 190.0}}, summary={"perception": 1400.5, "cognition": 300.0})
    runs = [pope_like("base", 85.1), pope_like("base", 86.5), mme]
    # One model's results on several benchmarks share its column; a second POPE run named
    # "base" gets a column of its own.
    assert run_labels(runs) == ["base", "base (2)", "base"]
    table = compare_table(runs)
    assert "| benchmark | metric | base | base (2) |" in table
    assert "| pope | mean_acc | 85.10 | 86.50 |" in table
    assert "| mme | perception | 1400.50 | – |" in table
    png = compare_chart(runs, tmp_path / "cmp.png")
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] > 300 and img.shape[1] > 500
    # Two panels (percent, score) of coloured bars: more than a handful of distinct colours.
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20
    with pytest.raises(EvalError, match="nothing to compare"):
        compare_table([])
