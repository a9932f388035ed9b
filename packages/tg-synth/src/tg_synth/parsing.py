"""Strict reading of the JSON each chat step asks for.

An answer is accepted only when it is one JSON object (optionally inside a single ```json fence)
with the fields the step asked for. Structural problems raise ``OutputError``, which earns the
answer one repair attempt and then quarantines the record. Entries that are well-formed but point
at objects that do not exist are dropped and counted, so one bad triple does not cost the rest.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from tg_data.coords import parse_boxes

_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n?(.*?)\n?\s*```$", re.DOTALL)
MARKER = re.compile(r"\{\s*(\d+)\s*\}")
MAX_NAME_WORDS = 6
MAX_RELATION_WORDS = 5


class OutputError(ValueError):
    """An answer that is not the JSON that was asked for; the message says what is wrong."""


def parse_json_object(content: str) -> dict[str, Any]:
    text = (content or "").strip()
    if not text:
        raise OutputError("the answer is empty")
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if not text.startswith(("{", "[")):
            hint = "not JSON"
        elif e.pos >= len(text) - 2 or "Unterminated" in e.msg:
            hint = "truncated JSON"
        else:
            hint = "malformed JSON"
        raise OutputError(f"{hint}: {e.msg} at character {e.pos}") from None
    if not isinstance(value, dict):
        raise OutputError(f"expected a JSON object, got a JSON {type(value).__name__}")
    return value


def _require(obj: dict[str, Any], key: str, kind: type, what: str) -> Any:
    if key not in obj:
        raise OutputError(f"missing field {key!r} ({what})")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise OutputError(f"field {key!r} must be a {what}, got {type(value).__name__}")
    return value


def _clean_phrase(text: str) -> str:
    return " ".join(text.strip().strip(".").split()).lower()


def _as_id(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise OutputError(f"{where} must be an integer id, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise OutputError(f"{where} must be an integer id, got {value!r}")


def _no_coordinates(text: str, where: str) -> None:
    parsed = parse_boxes(text)
    if parsed.boxes or parsed.misses:
        raise OutputError(f"{where} contains coordinates; write {{id}} marks instead of boxes")


# one validator per step -----------------------------------------------------------------------------
def validate_recognize(obj: dict[str, Any], max_objects: int) -> dict[str, Any]:
    names = _require(obj, "objects", list, "list of noun phrases")
    out: list[str] = []
    dropped: Counter[str] = Counter()
    for k, name in enumerate(names):
        if not isinstance(name, str):
            raise OutputError(f"objects[{k}] must be a string, got {type(name).__name__}")
        clean = _clean_phrase(name)
        if not clean:
            dropped["recognize.empty_name"] += 1
        elif len(clean.split()) > MAX_NAME_WORDS:
            dropped["recognize.name_too_long"] += 1
        elif clean in out:
            dropped["recognize.duplicate_name"] += 1
        elif len(out) >= max_objects:
            dropped["recognize.beyond_max_objects"] += 1
        else:
            out.append(clean)
    return {"objects": out, "dropped": dict(dropped)}


def validate_relate(obj: dict[str, Any], ids: set[int]) -> dict[str, Any]:
    items = _require(obj, "relations", list, "list of {subject, relation, object}")
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, str, int]] = set()
    dropped: Counter[str] = Counter()
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            raise OutputError(f"relations[{k}] must be an object with subject, relation, object")
        for key in ("subject", "relation", "object"):
            if key not in item:
                raise OutputError(f"relations[{k}] is missing {key!r}")
        s = _as_id(item["subject"], f"relations[{k}].subject")
        o = _as_id(item["object"], f"relations[{k}].object")
        rel = item["relation"]
        if not isinstance(rel, str):
            raise OutputError(f"relations[{k}].relation must be a string")
        rel = _clean_phrase(rel)
        if s not in ids or o not in ids:
            dropped["relate.unknown_object"] += 1
        elif s == o:
            dropped["relate.self_relation"] += 1
        elif not rel or len(rel.split()) > MAX_RELATION_WORDS:
            dropped["relate.bad_relation_phrase"] += 1
        elif (s, rel, o) in seen:
            dropped["relate.duplicate"] += 1
        else:
            seen.add((s, rel, o))
            out.append({"subject": s, "relation": rel, "object": o})
    return {"relations": out, "dropped": dict(dropped)}


def validate_refer(obj: dict[str, Any], ids: set[int]) -> dict[str, Any]:
    items = _require(obj, "expressions", list, "list of {id, expression}")
    out: dict[str, str] = {}
    dropped: Counter[str] = Counter()
    for k, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item or "expression" not in item:
            raise OutputError(f"expressions[{k}] must be an object with id and expression")
        i = _as_id(item["id"], f"expressions[{k}].id")
        expr = item["expression"]
        if not isinstance(expr, str):
            raise OutputError(f"expressions[{k}].expression must be a string")
        expr = " ".join(expr.strip().rstrip(".").split())
        if i not in ids:
            dropped["refer.unknown_object"] += 1
        elif not expr:
            dropped["refer.empty_expression"] += 1
        elif parse_boxes(expr).boxes or parse_boxes(expr).misses or MARKER.search(expr):
            dropped["refer.has_coordinates"] += 1
        elif str(i) in out:
            dropped["refer.duplicate"] += 1
        else:
            out[str(i)] = expr
    return {"expressions": out, "dropped": dict(dropped)}


def _check_marks(text: str, ids: set[int], where: str) -> list[int]:
    _no_coordinates(MARKER.sub("", text), where)
    marks = [int(m) for m in MARKER.findall(text)]
    unknown = sorted({m for m in marks if m not in ids})
    if unknown:
        raise OutputError(f"{where} marks unknown object id(s) {unknown}; known ids: {sorted(ids)}")
    return marks


def validate_converse(obj: dict[str, Any], ids: set[int], max_rounds: int) -> dict[str, Any]:
    turns = _require(obj, "turns", list, "list of {question, answer}")
    if not turns:
        raise OutputError("turns is empty")
    out = []
    n_marks = 0
    for k, turn in enumerate(turns[:max_rounds]):
        if not isinstance(turn, dict):
            raise OutputError(f"turns[{k}] must be an object with question and answer")
        q, a = turn.get("question"), turn.get("answer")
        if not isinstance(q, str) or not q.strip() or not isinstance(a, str) or not a.strip():
            raise OutputError(f"turns[{k}] needs a non-empty question and answer")
        n_marks += len(_check_marks(q, ids, f"turns[{k}].question"))
        n_marks += len(_check_marks(a, ids, f"turns[{k}].answer"))
        out.append({"question": " ".join(q.split()), "answer": " ".join(a.split())})
    if n_marks == 0:
        raise OutputError("the conversation marks no object with {id}; mark every mention of a listed object")
    return {"turns": out}


def validate_describe(obj: dict[str, Any], ids: set[int]) -> dict[str, Any]:
    text = _require(obj, "description", str, "string")
    text = " ".join(text.split())
    if not text:
        raise OutputError("description is empty")
    if not _check_marks(text, ids, "description"):
        raise OutputError("the description marks no object with {id}; mark every mention of a listed object")
    return {"description": text}
