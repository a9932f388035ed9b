"""MME: yes/no questions in pairs per image, scored per sub-task as acc + acc+.

As in the MME paper and its ``calculation.py``: acc is the share of questions answered right,
acc+ the share of images whose questions are all answered right, a sub-task scores acc + acc+
(at most 200); perception is the sum over its 10 sub-tasks (at most 2000), cognition over its 4
(at most 800). An answer is "yes"/"no" when it is exactly that, else by whether its first four
characters contain "yes" (then "no"); anything else is "other" and wrong.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tg_data.io import DataError
from tg_eval.errors import EvalError
from tg_eval.predictions import PredictionSet
from tg_eval.questions import DEFAULT_SUFFIXES, question_key
from tg_eval.records import first_field, read_records, record_id, require
from tg_eval.result import EvalResult, Unit, ratio

PERCEPTION: tuple[str, ...] = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
COGNITION: tuple[str, ...] = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
#: Columns read from Parquet: the HF release's ``image`` column holds the pictures and stays on disk.
COLUMNS: tuple[str, ...] = ("id", "question_id", "image_path", "category", "question", "answer")


@dataclass(frozen=True)
class MmeQuestion:
    id: str | None  # an explicit unique id when the file has one
    category: str
    image: str
    question: str
    answer: str  # "yes" / "no"

    def key(self, suffixes: Sequence[str] = DEFAULT_SUFFIXES) -> str:
        return pair_key(self.image, self.question, suffixes)


def mme_yes_no(text: str) -> str:
    t = text.strip().lower()
    if t in ("yes", "no"):
        return t
    head = t[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def read_mme(path: str | Path) -> list[MmeQuestion]:
    """Records ``{category, question, answer}`` with the image in ``image`` or ``question_id`` (as in
    the HF ``MME`` parquet, whose question_id is ``<sub-task>/<image>``), plus an optional unique ``id``."""
    out = []
    recs = read_records(path, "MME ground truth", columns=COLUMNS)
    for n, rec in enumerate(recs, 1):
        where = f"{path}: record {n}"
        answer = str(require(rec, "answer", where)).strip().lower()
        if answer not in ("yes", "no"):
            raise DataError(f"{where}: answer {rec['answer']!r} is not yes/no")
        image = first_field(rec, ("image_path", "question_id", "image"), where)
        if not isinstance(image, str):
            raise DataError(f"{where}: the image identity (question_id or image) must be text, got {type(image).__name__}")
        out.append(MmeQuestion(
            id=record_id(rec["id"]) if rec.get("id") is not None else None,
            category=str(require(rec, "category", where)),
            image=image,
            question=str(require(rec, "question", where)),
            answer=answer,
        ))
    return out


def pair_key(image: str, question: str, suffixes: Sequence[str] = DEFAULT_SUFFIXES) -> str:
    """MME asks two questions per image, so a question is its image plus its normalised text."""
    return f"{image}\x00{question_key(question, suffixes).text}"


def mme_predictions(
    records: list[dict[str, Any]], source: str, suffixes: Sequence[str] = DEFAULT_SUFFIXES
) -> PredictionSet:
    """Predictions keyed by (``question_id``, ``prompt``) as LLaVA writes them, or by ``id`` when
    they carry no prompt (for ground truth that has unique ids)."""
    keyed = []
    for n, rec in enumerate(records, 1):
        prompt = rec.get("prompt") or rec.get("question")
        image = rec.get("question_id") or rec.get("image")
        if prompt is not None and image is not None:
            key = pair_key(str(image), str(prompt), suffixes)
        elif rec.get("id") is not None:
            key = record_id(rec["id"])
        else:
            raise DataError(
                f"{source}: record {n} needs 'question_id' and 'prompt' (or 'question'), or an 'id' that the "
                "ground truth also has: MME asks two questions per image, so the image alone is ambiguous"
            )
        keyed.append({**rec, "_key": key})
    return PredictionSet.from_records(keyed, source, id_fields=("_key",))


def score_mme(
    questions: list[MmeQuestion],
    predictions: PredictionSet,
    name: str = "predictions",
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
) -> EvalResult:
    """Per sub-task acc, acc+ and score; ``predictions`` as keyed by ``mme_predictions``."""
    if not questions:
        raise EvalError("the MME ground truth holds no questions")
    keys = [q.key(suffixes) for q in questions]
    if len(set(keys)) != len(keys):
        dup = next(q for q, k in zip(questions, keys, strict=True) if keys.count(k) > 1)
        raise DataError(f"MME ground truth: image {dup.image!r} has the question {dup.question!r} twice")
    used: set[str] = set()
    texts: list[str | None] = []
    for q, k in zip(questions, keys, strict=True):
        key = k if k in predictions.by_id else q.id if q.id is not None and q.id in predictions.by_id else None
        texts.append(None if key is None else predictions.text(key))
        if key is not None:
            used.add(key)
    unmatched = len(set(predictions.by_id) - used)
    per_cat: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    missing = other = 0
    for q, text in zip(questions, texts, strict=True):
        if text is None:
            missing += 1
            pred = "other"
        else:
            pred = mme_yes_no(text)
            other += pred == "other"
        per_cat[q.category][q.image].append(pred == q.answer)
    rows: dict[str, dict[str, float | int]] = {}
    ordered = [c for c in (*PERCEPTION, *COGNITION) if c in per_cat] + sorted(c for c in per_cat if c not in PERCEPTION + COGNITION)
    for cat in ordered:
        images = per_cat[cat]
        answers = [hit for hits in images.values() for hit in hits]
        acc = ratio(sum(answers), len(answers))
        acc_plus = ratio(sum(all(h) for h in images.values()), len(images))
        rows[cat] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus, "n": len(answers)}
    summary: dict[str, float | int] = {}
    notes = []
    for total_name, members in (("perception", PERCEPTION), ("cognition", COGNITION)):
        present = [c for c in members if c in rows]
        if present:
            summary[total_name] = sum(float(rows[c]["score"]) for c in present)
            if len(present) < len(members):
                absent = [c for c in members if c not in rows]
                notes.append(f"{total_name} sums {len(present)} of {len(members)} sub-tasks; absent: {absent}")
    extra = [c for c in rows if c not in PERCEPTION + COGNITION]
    if extra:
        notes.append(f"sub-tasks outside MME's perception/cognition lists are not in the totals: {extra}")
    if other:
        notes.append(f"{other} answer(s) are neither yes nor no and count as wrong")
    if missing:
        notes.append(f"{missing} question(s) have no prediction and count as wrong")
    if unmatched:
        notes.append(f"{unmatched} prediction(s) match no question and were not scored")
    return EvalResult(
        benchmark="mme",
        name=name,
        units={"acc": Unit.PERCENT, "acc_plus": Unit.PERCENT, "score": Unit.SCORE, "n": Unit.COUNT,
               "perception": Unit.SCORE, "cognition": Unit.SCORE},
        rows=rows,
        summary=summary,
        counts={"questions": len(questions), "other_answers": other, "missing": missing,
                "unmatched_predictions": unmatched, "duplicate_predictions": len(predictions.duplicates)},
        notes=notes,
    )
