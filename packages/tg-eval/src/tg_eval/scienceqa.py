"""ScienceQA-IMG: option-letter accuracy on the test questions that come with an image.

Ground truth is ScienceQA's ``problems.json`` (``{pid: {choices, answer, image, split, subject}}``);
the IMG subset is split ``test`` with a non-empty ``image``. Answers whose option cannot be told
count as wrong and are reported (LLaVA's script guesses a random option instead).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tg_data.io import DataError
from tg_eval.errors import EvalError
from tg_eval.options import LETTERS, extract_option
from tg_eval.predictions import PredictionSet
from tg_eval.records import load_json_any, record_id, require
from tg_eval.result import EvalResult, Unit, ratio


@dataclass(frozen=True)
class ChoiceQuestion:
    id: str
    choices: list[str]
    answer: str  # the letter
    subject: str = ""


def read_scienceqa(path: str | Path, split: str = "test", with_image: bool = True) -> list[ChoiceQuestion]:
    data = load_json_any(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected ScienceQA's problems.json (an object keyed by problem id)")
    out = []
    for pid, rec in data.items():
        where = f"{path}: problem {pid}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object")
        if rec.get("split") != split or (with_image and not rec.get("image")):
            continue
        choices = require(rec, "choices", where)
        answer = require(rec, "answer", where)
        if not isinstance(choices, list) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise DataError(f"{where}: 'answer' must index into 'choices' ({answer!r} of {len(choices)} choices)")
        out.append(ChoiceQuestion(record_id(pid), [str(c) for c in choices], LETTERS[answer], str(rec.get("subject") or "")))
    return out


def score_choices(
    questions: list[ChoiceQuestion], predictions: PredictionSet, benchmark: str, name: str = "predictions"
) -> EvalResult:
    if not questions:
        raise EvalError(f"the {benchmark} ground truth holds no questions (check the split and the image filter)")
    hits: dict[str, list[int]] = defaultdict(list)
    missing = unparseable = 0
    for q in questions:
        text = predictions.text(q.id)
        if text is None:
            missing += 1
            letter = None
        else:
            letter = extract_option(text, q.choices)
            unparseable += letter is None
        hit = int(letter == q.answer)
        hits["overall"].append(hit)
        if q.subject:
            hits[q.subject].append(hit)
    order = [*sorted(k for k in hits if k != "overall"), "overall"]
    rows: dict[str, dict[str, float | int]] = {k: {"acc": ratio(sum(hits[k]), len(hits[k])), "n": len(hits[k])} for k in order}
    unmatched = len(set(predictions.by_id) - {q.id for q in questions})
    notes = []
    if unparseable:
        notes.append(f"{unparseable} answer(s) name no option and count as wrong")
    if missing:
        notes.append(f"{missing} question(s) have no prediction and count as wrong")
    if unmatched:
        notes.append(f"{unmatched} prediction(s) match no question id and were not scored")
    return EvalResult(
        benchmark=benchmark,
        name=name,
        units={"acc": Unit.PERCENT, "n": Unit.COUNT},
        rows=rows,
        summary={"acc": rows["overall"]["acc"]},
        counts={"questions": len(questions), "unparseable": unparseable, "missing": missing,
                "unmatched_predictions": unmatched, "duplicate_predictions": len(predictions.duplicates)},
        notes=notes,
    )


def score_scienceqa(questions: list[ChoiceQuestion], predictions: PredictionSet, name: str = "predictions") -> EvalResult:
    return score_choices(questions, predictions, "scienceqa-img", name)
