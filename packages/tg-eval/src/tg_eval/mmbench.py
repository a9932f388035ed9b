"""MMBench: multiple choice with circular evaluation.

A question with k options is asked k times, its options rotated one place each time; it counts as
right only when every pass picks the right option (MMBench's CircularEval). Two layouts give the
passes: the official TSV's circular copies (rows whose ``index`` is the base index plus a
multiple of 1,000,000, each with its own option order and answer), or one row per question with
predictions carrying ``round_id`` r, where pass r shows ``options[r:] + options[:r]`` as A, B, ...
(LLaVA's ``--all-rounds``). Single-pass accuracy (pass 0 only) is reported beside it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tg_data.io import DataError
from tg_eval.errors import EvalError
from tg_eval.options import LETTERS, extract_option
from tg_eval.predictions import PredictionSet
from tg_eval.records import read_records, record_id, require
from tg_eval.result import EvalResult, Unit, ratio

CIRCULAR_STRIDE = 1_000_000
COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "E", "answer", "category", "l2-category")


@dataclass(frozen=True)
class MMBenchQuestion:
    index: int
    options: list[str]  # in the row's own order: A, B, ...
    answer: str  # letter
    category: str = ""

    @property
    def group(self) -> int:
        return self.index % CIRCULAR_STRIDE


def _is_blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and v.strip() in ("", "nan"))


def read_mmbench(path: str | Path, category_field: str = "l2-category") -> list[MMBenchQuestion]:
    """The official TSV (images are not loaded) or JSON/Parquet records with the same columns."""
    out = []
    for n, rec in enumerate(read_records(path, "MMBench questions", columns=COLUMNS), 1):
        where = f"{path}: row {n}"
        try:
            index = int(require(rec, "index", where))
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'index' must be an integer, got {rec.get('index')!r}") from None
        options = []
        for letter in LETTERS[:5]:
            if _is_blank(rec.get(letter)):
                break
            options.append(str(rec[letter]))
        if len(options) < 2:
            raise DataError(f"{where}: needs at least options A and B")
        answer = str(require(rec, "answer", where)).strip()
        if answer not in LETTERS[: len(options)]:
            raise DataError(f"{where}: answer {answer!r} is not one of the options {list(LETTERS[: len(options)])}")
        category = rec.get(category_field) if not _is_blank(rec.get(category_field)) else rec.get("category")
        out.append(MMBenchQuestion(index, options, answer, "" if _is_blank(category) else str(category)))
    return out


def rotated(question: MMBenchQuestion, r: int) -> tuple[list[str], str]:
    """Pass ``r``'s options (rotated left by r) and the letter of the right one."""
    k = len(question.options)
    opts = question.options[r % k :] + question.options[: r % k]
    right = LETTERS.index(question.answer)
    return opts, LETTERS[(right - r) % k]


def prediction_key(question_id: Any, round_id: Any = 0) -> str:
    return f"{record_id(question_id)}#{int(round_id or 0)}"


def mmbench_predictions(records: list[dict[str, Any]], source: str) -> PredictionSet:
    """Predictions ``{question_id, text, round_id?}`` keyed by question and pass."""
    keyed = []
    for n, rec in enumerate(records, 1):
        where = f"{source}: record {n}"
        keyed.append({**rec, "_key": prediction_key(require(rec, "question_id", where), rec.get("round_id", 0))})
    return PredictionSet.from_records(keyed, source, id_fields=("_key",))


def score_mmbench(questions: list[MMBenchQuestion], predictions: PredictionSet, name: str = "predictions") -> EvalResult:
    if not questions:
        raise EvalError("the MMBench file holds no questions")
    copies = any(q.index >= CIRCULAR_STRIDE for q in questions)
    rounds_given = any(not k.endswith("#0") for k in predictions.by_id)
    circular = copies or rounds_given
    passes: dict[int, list[bool]] = defaultdict(list)  # group -> correctness of each pass
    single: dict[int, bool] = {}
    category: dict[int, str] = {}
    expected: set[str] = set()
    missing = unparseable = 0
    for q in questions:
        category.setdefault(q.group, q.category)
        rounds = range(len(q.options)) if (circular and not copies) else range(1)
        for r in rounds:
            key = prediction_key(q.index, r)
            expected.add(key)
            opts, right = rotated(q, r)
            text = predictions.text(key)
            if text is None:
                missing += 1
                hit = False
            else:
                letter = extract_option(text, opts)
                unparseable += letter is None
                hit = letter == right
            passes[q.group].append(hit)
            if q.index == q.group and r == 0:
                single[q.group] = hit
    groups = sorted(passes)
    by_cat: dict[str, list[int]] = defaultdict(list)
    for g in groups:
        by_cat[category[g] or "all"].append(g)
    rows: dict[str, dict[str, float | int]] = {}
    for cat in [*sorted(c for c in by_cat if c != "all"), "overall"]:
        gs = groups if cat == "overall" else by_cat[cat]
        row: dict[str, float | int] = {}
        if circular:
            row["circular_acc"] = ratio(sum(all(passes[g]) for g in gs), len(gs))
        row["single_acc"] = ratio(sum(single.get(g, False) for g in gs), len(gs))
        row["n"] = len(gs)
        rows[cat] = row
    unmatched = len(set(predictions.by_id) - expected)
    notes = []
    if not circular:
        notes.append(
            "no circular passes found (no copies with index >= 1,000,000 and no round_id > 0): only "
            "single-pass accuracy is reported; answer every rotation (round_id 0..k-1) for CircularEval"
        )
    if unparseable:
        notes.append(f"{unparseable} answer(s) name no option and count as wrong")
    if missing:
        notes.append(f"{missing} pass(es) have no prediction and count as wrong")
    if unmatched:
        notes.append(f"{unmatched} prediction(s) match no question pass and were not scored")
    headline = "circular_acc" if circular else "single_acc"
    return EvalResult(
        benchmark="mmbench",
        name=name,
        units={"circular_acc": Unit.PERCENT, "single_acc": Unit.PERCENT, "n": Unit.COUNT, "acc": Unit.PERCENT},
        rows=rows,
        summary={"acc": rows["overall"][headline]},
        counts={"questions": len(groups), "passes": len(expected), "unparseable": unparseable, "missing": missing,
                "unmatched_predictions": unmatched, "duplicate_predictions": len(predictions.duplicates)},
        notes=notes,
    )
