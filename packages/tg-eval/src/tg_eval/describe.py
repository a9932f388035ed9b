"""The paper's description assessment: a judge grades Quality, Richness and Accuracy from 1 to 5.

The judge never sees pixels; it compares the model's description with a reference account of the
image (ground-truth objects, attributes, relations; for the shapes world, its scene truth). The
rubric wording is ours (``prompts/describe_rubric.txt``): the paper names the three criteria
and the 1-5 scale but does not publish its prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tg_data.schema import Role, Sample, Task
from tg_eval.errors import EvalError
from tg_eval.judge import ChatClient, JudgeItem, MalformedReply, load_prompt, run_judge
from tg_eval.predictions import PredictionSet
from tg_eval.records import first_field, read_records, record_id, require
from tg_eval.result import EvalResult, Unit

CRITERIA: tuple[str, ...] = ("quality", "richness", "accuracy")
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)


@dataclass(frozen=True)
class DescribeItem:
    id: str
    context: str


def parse_assessment(reply: str) -> dict[str, int]:
    """Exactly one JSON object (a ```json fence allowed) with integer quality/richness/accuracy in 1..5."""
    text = reply.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MalformedReply(f"not one JSON object ({e.msg})") from None
    if not isinstance(data, dict):
        raise MalformedReply("the reply must be a JSON object")
    out = {}
    for key in CRITERIA:
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5:
            raise MalformedReply(f"{key!r} must be an integer from 1 to 5, got {v!r}")
        out[key] = v
    return out


def read_describe_items(path: str | Path) -> list[DescribeItem]:
    """Records ``{id, context}`` (``reference`` or ``caption`` also accepted for the context)."""
    out = []
    for n, rec in enumerate(read_records(path, "description references"), 1):
        where = f"{path}: record {n}"
        ctx = first_field(rec, ("context", "reference", "caption"), where)
        out.append(DescribeItem(record_id(require(rec, "id", where)), "\n".join(ctx) if isinstance(ctx, list) else str(ctx)))
    return out


def describe_items_from_samples(samples: Iterable[Sample]) -> list[DescribeItem]:
    """Grounded-description samples: the reference is the sample's own assistant answer."""
    out = []
    for s in samples:
        if s.task != Task.GROUNDED_DESC:
            continue
        ref = next((t.text for t in s.turns if t.role == Role.ASSISTANT), None)
        if ref:
            out.append(DescribeItem(s.id, ref))
    return out


def assessment_messages(item: DescribeItem, description: str) -> list[dict[str, str]]:
    rubric = Template(load_prompt("describe_rubric")).substitute(context=item.context, description=description)
    return [{"role": "system", "content": load_prompt("describe_system").strip()}, {"role": "user", "content": rubric}]


def score_descriptions(
    items: list[DescribeItem],
    predictions: PredictionSet,
    client: ChatClient,
    review_log: str | Path | None = None,
    name: str = "predictions",
    progress: bool = False,
) -> EvalResult:
    judged, missing = [], 0
    for it in items:
        text = predictions.text(it.id)
        if text is None:
            missing += 1
            continue
        judged.append(JudgeItem(it.id, assessment_messages(it, text)))
    if not judged:
        raise EvalError("no item has a description to grade; check the predictions' id values")
    verdicts = run_judge(client, judged, parse_assessment, review_log, progress)
    ok = [v.value for v in verdicts.values() if v.ok]
    failures = len(judged) - len(ok)
    if not ok:
        raise EvalError(f"the judge failed on all {len(judged)} descriptions; see the review log for its replies")
    row: dict[str, float | int] = {c: sum(v[c] for v in ok) / len(ok) for c in CRITERIA}
    row["n"] = len(ok)
    notes = []
    if failures:
        notes.append(f"the judge gave no readable grades for {failures} description(s); they are left out")
    if missing:
        notes.append(f"{missing} item(s) have no description and were not graded")
    return EvalResult(
        benchmark="describe",
        name=name,
        units={**dict.fromkeys(CRITERIA, Unit.RATING), "n": Unit.COUNT},
        rows={"all": row},
        summary={c: row[c] for c in CRITERIA},
        counts={"items": len(items), "graded": len(ok), "judge_failures": failures, "missing": missing},
        notes=notes,
        inputs={"judge_model": client.config.model},
    )
