"""VQAv2: the official 10-annotator accuracy, overall and per answer type.

Ground truth is the official annotation file (``{"annotations": [{question_id, answers: [{answer}],
answer_type}]}``) or any list of ``{question_id, answers}`` records (answers as strings or
``{answer}`` objects). A question without a prediction scores 0 and is counted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tg_data.io import DataError
from tg_eval.errors import EvalError
from tg_eval.predictions import PredictionSet
from tg_eval.records import load_json_any, record_id, require
from tg_eval.result import EvalResult, Unit
from tg_eval.vqa_normalize import vqa_accuracy


@dataclass(frozen=True)
class VqaQuestion:
    id: str
    answers: list[str]
    answer_type: str = ""


def read_vqa_annotations(path: str | Path) -> list[VqaQuestion]:
    data = load_json_any(path)
    records = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise DataError(f"{path}: expected the official annotation file (with 'annotations') or a list of records")
    out = []
    for n, rec in enumerate(records, 1):
        where = f"{path}: annotation {n}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object")
        raw = require(rec, "answers", where)
        if not isinstance(raw, list) or not raw:
            raise DataError(f"{where}: 'answers' must be a non-empty list")
        answers = [a["answer"] if isinstance(a, dict) and "answer" in a else a for a in raw]
        if not all(isinstance(a, str) for a in answers):
            raise DataError(f"{where}: every answer must be a string or an object with 'answer'")
        out.append(VqaQuestion(record_id(require(rec, "question_id", where)), answers, str(rec.get("answer_type") or "")))
    return out


def score_vqav2(questions: list[VqaQuestion], predictions: PredictionSet, name: str = "predictions") -> EvalResult:
    if not questions:
        raise EvalError("the VQAv2 ground truth holds no questions")
    by_type: dict[str, list[float]] = defaultdict(list)
    overall: list[float] = []
    missing = 0
    for q in questions:
        text = predictions.text(q.id)
        if text is None:
            missing += 1
            acc = 0.0
        else:
            acc = vqa_accuracy(text, q.answers)
        overall.append(acc)
        if q.answer_type:
            by_type[q.answer_type].append(acc)
    rows: dict[str, dict[str, float | int]] = {
        t: {"acc": 100 * sum(v) / len(v), "n": len(v)} for t, v in sorted(by_type.items())
    }
    rows["overall"] = {"acc": 100 * sum(overall) / len(overall), "n": len(overall)}
    unmatched = len(set(predictions.by_id) - {q.id for q in questions})
    notes = []
    if missing:
        notes.append(f"{missing} question(s) have no prediction and score 0")
    if unmatched:
        notes.append(f"{unmatched} prediction(s) match no question id and were not scored")
    return EvalResult(
        benchmark="vqav2",
        name=name,
        units={"acc": Unit.PERCENT, "n": Unit.COUNT},
        rows=rows,
        summary={"acc": rows["overall"]["acc"]},
        counts={"questions": len(questions), "missing": missing, "unmatched_predictions": unmatched,
                "duplicate_predictions": len(predictions.duplicates)},
        notes=notes,
    )
