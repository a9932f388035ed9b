"""LLaVA-Bench (in-the-wild): a judge scores the model's answer against a reference answer.

The judge sees the image's context captions, the question, the reference answer (assistant 1)
and the model's answer (assistant 2) with LLaVA's rule prompt, and replies with two scores 1-10
on its first line. The relative score of a category is mean(model) / mean(reference) x 100, as
in LLaVA's ``summarize_gpt_review.py``; judge failures are left out of both means and counted.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tg_eval.errors import EvalError
from tg_eval.judge import ChatClient, JudgeItem, MalformedReply, load_prompt, run_judge
from tg_eval.predictions import PredictionSet, read_predictions
from tg_eval.records import read_records, record_id, require
from tg_eval.result import EvalResult, Unit

_PAIR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[ ,]\s*(\d+(?:\.\d+)?)\s*$")
ROLE = "Assistant"


@dataclass(frozen=True)
class BenchQuestion:
    id: str
    image: str
    text: str
    category: str


def parse_score_pair(reply: str) -> list[float]:
    """The first line must hold exactly two scores in [1, 10], separated by a space or a comma."""
    first = next((line for line in reply.splitlines() if line.strip()), "")
    m = _PAIR.match(first)
    if not m:
        raise MalformedReply(f"the first line must be two scores like '8 7', got {first[:80]!r}")
    scores = [float(m.group(1)), float(m.group(2))]
    if not all(1 <= s <= 10 for s in scores):
        raise MalformedReply(f"scores must lie in 1..10, got {scores}")
    return scores


def read_llava_bench(questions: str | Path, context: str | Path) -> tuple[list[BenchQuestion], dict[str, str]]:
    qs = []
    for n, rec in enumerate(read_records(questions, "LLaVA-Bench questions"), 1):
        where = f"{questions}: record {n}"
        qs.append(BenchQuestion(record_id(require(rec, "question_id", where)), str(require(rec, "image", where)),
                                str(require(rec, "text", where)), str(rec.get("category") or "all")))
    captions: dict[str, str] = {}
    for n, rec in enumerate(read_records(context, "LLaVA-Bench context"), 1):
        where = f"{context}: record {n}"
        caption = require(rec, "caption", where)
        captions[str(require(rec, "image", where))] = "\n".join(caption) if isinstance(caption, list) else str(caption)
    return qs, captions


def review_messages(question: BenchQuestion, caption: str, reference: str, answer: str) -> list[dict[str, str]]:
    content = (
        f"[Context]\n{caption}\n\n"
        f"[Question]\n{question.text}\n\n"
        f"[{ROLE} 1]\n{reference}\n\n[End of {ROLE} 1]\n\n"
        f"[{ROLE} 2]\n{answer}\n\n[End of {ROLE} 2]\n\n"
        f"[System]\n{load_prompt('llava_bench_rule')}\n\n"
    )
    return [{"role": "system", "content": load_prompt("llava_bench_system").strip()}, {"role": "user", "content": content}]


def score_llava_bench(
    questions: list[BenchQuestion],
    captions: dict[str, str],
    references: PredictionSet,
    answers: PredictionSet,
    client: ChatClient,
    review_log: str | Path | None = None,
    name: str = "answers",
    progress: bool = False,
) -> EvalResult:
    items, missing, ids = [], 0, set()
    for q in questions:
        ids.add(q.id)
        ref, ans = references.text(q.id), answers.text(q.id)
        if ref is None:
            raise EvalError(f"{references.source}: no reference answer for question {q.id}")
        if q.image not in captions:
            raise EvalError(f"the context file has no caption for image {q.image!r} (question {q.id})")
        if ans is None:
            missing += 1
            continue
        items.append((q, JudgeItem(q.id, review_messages(q, captions[q.image], ref, ans))))
    if not items:
        raise EvalError("no question has an answer to review; check the answers' question_id values")
    verdicts = run_judge(client, [it for _, it in items], parse_score_pair, review_log, progress)
    pairs: dict[str, list[list[float]]] = defaultdict(list)
    failures = 0
    for q, it in items:
        v = verdicts[it.id]
        if not v.ok:
            failures += 1
            continue
        pairs[q.category].append(v.value)
        pairs["all"].append(v.value)
    if not pairs:
        raise EvalError(f"the judge failed on all {len(items)} reviews; see the review log for its replies")
    rows: dict[str, dict[str, float | int]] = {}
    for cat in [*sorted(c for c in pairs if c != "all"), "all"]:
        ref_mean = sum(p[0] for p in pairs[cat]) / len(pairs[cat])
        model_mean = sum(p[1] for p in pairs[cat]) / len(pairs[cat])
        rows[cat] = {"relative": 100 * model_mean / ref_mean, "reference": ref_mean, "model": model_mean, "n": len(pairs[cat])}
    notes = []
    if failures:
        notes.append(f"the judge gave no readable scores for {failures} review(s); they are left out of the means")
    if missing:
        notes.append(f"{missing} question(s) have no answer and were not reviewed")
    unmatched = len(set(answers.by_id) - ids)
    if unmatched:
        notes.append(f"{unmatched} answer(s) match no question id")
    return EvalResult(
        benchmark="llava-bench",
        name=name,
        units={"relative": Unit.PERCENT, "reference": Unit.RATING, "model": Unit.RATING, "n": Unit.COUNT},
        rows=rows,
        summary={"relative": rows["all"]["relative"]},
        counts={"questions": len(questions), "reviewed": len(items) - failures, "judge_failures": failures,
                "missing": missing, "unmatched_predictions": unmatched},
        notes=notes,
        inputs={"judge_model": client.config.model},
    )


def read_references(path: str | Path) -> PredictionSet:
    return read_predictions(path)
