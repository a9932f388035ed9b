"""GQA: exact match after normalisation, overall and per structural type.

The normalisation is the one LLaVA applies before GQA's official script: trailing period removed,
lower case, plus collapsed whitespace. Only accuracy is computed; GQA's consistency, validity,
plausibility and grounding scores need its scene graphs and are out of scope here.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tg_data.io import DataError
from tg_eval.errors import EvalError
from tg_eval.predictions import PredictionSet
from tg_eval.records import load_json_any, record_id, require
from tg_eval.result import EvalResult, Unit, ratio

_SPACE = re.compile(r"\s+")


def normalize_gqa(text: str) -> str:
    return _SPACE.sub(" ", text.strip().rstrip(".").strip().lower())


@dataclass(frozen=True)
class GqaQuestion:
    id: str
    answer: str
    structural: str = ""


def read_gqa_questions(path: str | Path) -> list[GqaQuestion]:
    """GQA's question file (``{qid: {answer, types: {structural}}}``) or records ``{question_id, answer}``."""
    data = load_json_any(path)
    if isinstance(data, dict):
        items = [({"question_id": k, **v} if isinstance(v, dict) else v) for k, v in data.items()]
    elif isinstance(data, list):
        items = data
    else:
        raise DataError(f"{path}: expected GQA's question file (an object keyed by question id) or a list of records")
    out = []
    for n, rec in enumerate(items, 1):
        where = f"{path}: question {n}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object")
        types = rec.get("types") if isinstance(rec.get("types"), dict) else {}
        out.append(GqaQuestion(record_id(require(rec, "question_id", where)), str(require(rec, "answer", where)),
                               str(types.get("structural") or rec.get("structural") or "")))
    return out


def score_gqa(questions: list[GqaQuestion], predictions: PredictionSet, name: str = "predictions") -> EvalResult:
    if not questions:
        raise EvalError("the GQA ground truth holds no questions")
    hits: dict[str, list[int]] = defaultdict(list)
    missing = 0
    for q in questions:
        text = predictions.text(q.id)
        missing += text is None
        hit = int(text is not None and normalize_gqa(text) == normalize_gqa(q.answer))
        hits["overall"].append(hit)
        if q.structural:
            hits[q.structural].append(hit)
    order = [*sorted(k for k in hits if k != "overall"), "overall"]
    rows: dict[str, dict[str, float | int]] = {k: {"acc": ratio(sum(hits[k]), len(hits[k])), "n": len(hits[k])} for k in order}
    unmatched = len(set(predictions.by_id) - {q.id for q in questions})
    notes = [f"{missing} question(s) have no prediction and count as wrong"] if missing else []
    if unmatched:
        notes.append(f"{unmatched} prediction(s) match no question id and were not scored")
    return EvalResult(
        benchmark="gqa",
        name=name,
        units={"acc": Unit.PERCENT, "n": Unit.COUNT},
        rows=rows,
        summary={"acc": rows["overall"]["acc"]},
        counts={"questions": len(questions), "missing": missing, "unmatched_predictions": unmatched,
                "duplicate_predictions": len(predictions.duplicates)},
        notes=notes,
    )
