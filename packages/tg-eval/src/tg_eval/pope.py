"""POPE: object hallucination as yes/no questions, scored per sampling category.

Answers are joined to labels by question identity, (category, image, question text without the
prompt suffix), never by position: LLaVA-1.5's question file lacks 90 of the ``random``
category's 3000 labelled questions, so a positional join pairs most of that category's answers
with another question's label. Everything that does not join is counted and reported.

The yes/no rule is LLaVA's: keep the text before the first ".", drop commas, and call the answer
"no" when its words include ``No``, ``not`` or ``no``; anything else is "yes". Words are split on
any whitespace (LLaVA splits on spaces only, which reads "No\\n" as yes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tg_data.io import DataError
from tg_data.schema import Role, Sample, Task
from tg_eval.errors import EvalError
from tg_eval.predictions import PredictionSet
from tg_eval.questions import DEFAULT_SUFFIXES, POPE_SPELLING_FIXES, question_key
from tg_eval.records import read_records, record_id, require
from tg_eval.result import EvalResult, Unit, ratio

POPE_CATEGORIES: tuple[str, ...] = ("random", "popular", "adversarial")
METRICS: tuple[str, ...] = ("acc", "precision", "recall", "f1", "yes_ratio")
CONFUSION: tuple[str, ...] = ("tp", "fp", "tn", "fn")


@dataclass(frozen=True)
class PopeQuestion:
    id: str
    category: str
    image: str
    text: str


@dataclass(frozen=True)
class PopeLabel:
    category: str
    image: str
    text: str
    label: str  # "yes" or "no"
    where: str = ""


def yes_no(answer: str) -> str:
    text = answer
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split()
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def read_pope_questions(path: str | Path) -> list[PopeQuestion]:
    """A LLaVA-style question file: ``{question_id, image, text, category}`` per line."""
    out = []
    for n, rec in enumerate(read_records(path, "POPE question file"), 1):
        where = f"{path}: record {n}"
        out.append(
            PopeQuestion(
                id=record_id(require(rec, "question_id", where)),
                category=str(require(rec, "category", where)),
                image=str(require(rec, "image", where)),
                text=str(require(rec, "text", where)),
            )
        )
    return out


def read_pope_labels(directory: str | Path, prefix: str = "coco") -> list[PopeLabel]:
    """Label files ``{prefix}_pope_{category}.json`` (JSON Lines ``{image, text, label}``) in ``directory``."""
    d = Path(directory)
    if not d.is_dir():
        raise EvalError(f"{directory}: not a directory; --labels takes the directory holding {prefix}_pope_*.json")
    out: list[PopeLabel] = []
    found = []
    for category in POPE_CATEGORIES:
        path = d / f"{prefix}_pope_{category}.json"
        if not path.exists():
            continue
        found.append(category)
        for n, rec in enumerate(read_records(path, "POPE label file"), 1):
            where = f"{path}: record {n}"
            label = str(require(rec, "label", where)).strip().lower()
            if label not in ("yes", "no"):
                raise DataError(f"{where}: label {rec['label']!r} is not 'yes' or 'no'")
            out.append(PopeLabel(category, str(require(rec, "image", where)), str(require(rec, "text", where)), label, where))
    if not found:
        names = ", ".join(f"{prefix}_pope_{c}.json" for c in POPE_CATEGORIES)
        raise EvalError(f"{directory}: holds none of the POPE label files {names}")
    return out


def pope_from_samples(samples: Iterable[Sample]) -> tuple[list[PopeQuestion], list[PopeLabel]]:
    """Questions and labels from ``pope`` samples (the shapes world writes them with
    ``meta`` category/label/object); question ids are the sample ids."""
    questions, labels = [], []
    for s in samples:
        if s.task != Task.POPE:
            continue
        for key in ("category", "label"):
            if key not in s.meta:
                raise EvalError(f"POPE sample {s.id!r} has no meta[{key!r}]")
        user = next((t.text for t in s.turns if t.role == Role.USER), "")
        image = s.image or ""
        questions.append(PopeQuestion(s.id, str(s.meta["category"]), image, user))
        labels.append(PopeLabel(str(s.meta["category"]), image, user, str(s.meta["label"]).lower(), s.id))
    return questions, labels


def confusion_metrics(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """POPE's metrics with "yes" as the positive class, as percentages."""
    n = tp + fp + tn + fn
    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "acc": ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": ratio(tp + fp, n),
    }


def score_pope(
    questions: Sequence[PopeQuestion],
    labels: Sequence[PopeLabel],
    answers: PredictionSet,
    name: str = "answers",
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
    fixes: Mapping[str, str] | None = POPE_SPELLING_FIXES,
) -> EvalResult:
    """Per-category and mean accuracy, precision, recall, F1, yes-ratio and confusion counts."""
    label_by_key: dict[tuple[str, str, str], PopeLabel] = {}
    for lab in labels:
        k = (lab.category, lab.image, question_key(lab.text, suffixes, fixes).text)
        if k in label_by_key:
            raise DataError(f"{lab.where}: the same question is labelled twice in category {lab.category!r}: {lab.text!r}")
        label_by_key[k] = lab
    seen_ids: set[str] = set()
    stats: dict[str, Counter[str]] = {}
    asked: set[tuple[str, str, str]] = set()
    for q in questions:
        if q.id in seen_ids:
            raise DataError(f"question file: question_id {q.id} appears twice; ids must be unique")
        seen_ids.add(q.id)
        c = stats.setdefault(q.category, Counter())
        c["questions"] += 1
        qk = question_key(q.text, suffixes, fixes)
        k = (q.category, q.image, qk.text)
        lab = label_by_key.get(k)
        if lab is None:
            c["questions_without_label"] += 1
            continue
        if k in asked:
            raise DataError(f"question file: question {q.id} repeats an earlier question of {q.category!r}: {q.text!r}")
        asked.add(k)
        text = answers.text(q.id)
        if text is None:
            c["unanswered"] += 1
            continue
        c["matched"] += 1
        c["matched_by_fix"] += int(qk.fixed)
        pred = yes_no(text)
        if lab.label == "yes":
            c["tp" if pred == "yes" else "fn"] += 1
        else:
            c["fp" if pred == "yes" else "tn"] += 1
    for k, lab in label_by_key.items():
        c = stats.setdefault(lab.category, Counter())
        c["labels"] += 1
        if k not in asked:
            c["labels_not_asked"] += 1
    unknown_answers = sorted(set(answers.by_id) - seen_ids)
    categories = [c for c in POPE_CATEGORIES if c in stats] + sorted(c for c in stats if c not in POPE_CATEGORIES)
    rows: dict[str, dict[str, float | int]] = {}
    for cat in categories:
        c = stats[cat]
        if not c["matched"]:
            continue
        rows[cat] = {**confusion_metrics(c["tp"], c["fp"], c["tn"], c["fn"]), **{k: c[k] for k in CONFUSION},
                     "n": c["matched"]}
    if not rows:
        raise EvalError(
            "no answer could be joined to a label: check that --answers uses the question file's "
            "question_id values and that the question file's images and texts match the label files"
        )
    if len(rows) > 1:
        rows["mean"] = {m: sum(float(rows[c][m]) for c in rows) / len(rows) for m in METRICS}
    keys = ("labels", "questions", "matched", "matched_by_fix", "labels_not_asked", "questions_without_label", "unanswered")
    per_category = {cat: {k: stats[cat][k] for k in keys} for cat in categories}
    totals = {k: sum(per_category[c][k] for c in categories) for k in keys}
    notes = []
    for cat in categories:
        pc = per_category[cat]
        if pc["labels_not_asked"]:
            notes.append(f"{cat}: {pc['labels_not_asked']} of {pc['labels']} labelled questions are not in the question file")
        if pc["questions_without_label"]:
            notes.append(f"{cat}: {pc['questions_without_label']} of {pc['questions']} questions match no label")
        if pc["unanswered"]:
            notes.append(f"{cat}: {pc['unanswered']} questions have no answer")
        if pc["matched_by_fix"]:
            fixes_text = ", ".join(f"{a!r}->{b!r}" for a, b in (fixes or {}).items())
            notes.append(f"{cat}: {pc['matched_by_fix']} questions matched their label only after the spelling fix {fixes_text}")
    if unknown_answers:
        notes.append(f"{len(unknown_answers)} answer(s) have a question_id not in the question file (e.g. {unknown_answers[:3]})")
    if answers.duplicates:
        notes.append(f"{len(answers.duplicates)} repeated answer id(s); the first of each was scored")
    summary: dict[str, float | int] = {}
    for cat, row in rows.items():
        summary[f"{cat}_acc"] = row["acc"]
        summary[f"{cat}_f1"] = row["f1"]
    units: dict[str, str] = {m: Unit.PERCENT for m in METRICS} | {k: Unit.COUNT for k in (*CONFUSION, "n")}
    units |= dict.fromkeys(summary, Unit.PERCENT)
    return EvalResult(
        benchmark="pope",
        name=name,
        units=units,
        rows=rows,
        summary=summary,
        counts={**totals, "unknown_answers": len(unknown_answers), "duplicate_answers": len(answers.duplicates)},
        notes=notes,
        details={"categories": per_category},
    )
