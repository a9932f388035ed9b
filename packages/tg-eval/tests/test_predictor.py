from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tg_data.io import DataError
from tg_eval.errors import EvalError
from tg_eval.predictions import PredictionLog, read_predictions
from tg_eval.predictor import GenerationRequest, Predictor, generate_predictions


class ScriptedPredictor:
    """Answers ``answer <id>``; optionally raises when asked for a given id (a crash mid-run)."""

    def __init__(self, crash_on: str | None = None, wrong_count: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.crash_on = crash_on
        self.wrong_count = wrong_count

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[str]:
        ids = [r.id for r in requests]
        self.calls.append(ids)
        if self.crash_on in ids:
            raise RuntimeError("device lost")
        texts = [f"answer {i}" for i in ids]
        return texts[:-1] if self.wrong_count else texts


def requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(id=f"q{i}", prompt=f"<image>\nQuestion {i}?", image=f"{i}.png") for i in range(n)]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fake_satisfies_the_protocol() -> None:
    assert isinstance(ScriptedPredictor(), Predictor)


def test_generation_appends_in_batches_and_skips_done_ids(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    p = ScriptedPredictor()
    stats = generate_predictions(p, requests(7), out, batch_size=3)
    assert p.calls == [["q0", "q1", "q2"], ["q3", "q4", "q5"], ["q6"]]
    assert (stats.total, stats.skipped, stats.generated) == (7, 0, 7)
    assert lines(out) == [{"id": f"q{i}", "text": f"answer q{i}"} for i in range(7)]
    again = ScriptedPredictor()
    stats = generate_predictions(again, requests(7), out, batch_size=3)
    assert again.calls == [] and stats.skipped == 7


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    with pytest.raises(RuntimeError, match="device lost"):
        generate_predictions(ScriptedPredictor(crash_on="q4"), requests(8), out, batch_size=2)
    # Batches [q0,q1] and [q2,q3] were written before the crash in [q4,q5].
    assert [r["id"] for r in lines(out)] == ["q0", "q1", "q2", "q3"]
    p = ScriptedPredictor()
    stats = generate_predictions(p, requests(8), out, batch_size=2)
    assert p.calls == [["q4", "q5"], ["q6", "q7"]]
    assert stats.skipped == 4
    assert [r["id"] for r in lines(out)] == [f"q{i}" for i in range(8)]  # each id exactly once
    assert len(read_predictions(out)) == 8


def test_a_line_cut_off_mid_write_is_regenerated(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    out.write_text('{"id": "q0", "text": "answer q0"}\n{"id": "q1", "te')
    p = ScriptedPredictor()
    stats = generate_predictions(p, requests(3), out, batch_size=8)
    assert p.calls == [["q1", "q2"]]
    assert stats.recovered_partial_line
    assert [r["id"] for r in lines(out)] == ["q0", "q1", "q2"]


def test_bad_lines_and_bad_predictors_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    out.write_text('{"id": "q0", "text": "a"}\nnot json\n{"id": "q2", "text": "c"}\n')
    with pytest.raises(DataError, match=r"preds.jsonl:2: malformed JSON"):
        PredictionLog(out)
    fresh = tmp_path / "fresh.jsonl"
    with pytest.raises(EvalError, match="returned 1 texts for a batch of 2"):
        generate_predictions(ScriptedPredictor(wrong_count=True), requests(2), fresh, batch_size=2)
    assert not fresh.exists()  # nothing half-written
    with pytest.raises(EvalError, match="appears twice"):
        generate_predictions(ScriptedPredictor(), requests(2) + requests(1), fresh)
