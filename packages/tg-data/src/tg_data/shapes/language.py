"""Referring expressions over scenes: a tiny structured language, its meaning, and its text.

Expressions are built as ``Expr`` values and evaluated against the scene (``denote``), so
"unambiguous" is checked by meaning, not assumed from how an expression was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tg_data.shapes.scene import Scene, ShapesConfig, relation_holds

SUPERLATIVES: dict[str, tuple[str, int]] = {
    # name: (measure, sign) -- the shape with the extreme value of sign * measure
    "leftmost": ("cx", -1),
    "rightmost": ("cx", 1),
    "topmost": ("cy", -1),
    "bottommost": ("cy", 1),
    "biggest": ("area", 1),
    "smallest": ("area", -1),
}
# two values closer than this (fraction of the padded side, or of the area) are a tie: ambiguous
_TIE = 0.03


@dataclass(frozen=True)
class Expr:
    kind: str
    colour: str | None = None
    size: str | None = None
    superlative: str | None = None
    relation: str | None = None
    anchor: Expr | None = None

    def text(self) -> str:
        words = ["the"]
        if self.superlative:
            words.append(self.superlative)
        if self.size:
            words.append(self.size)
        if self.colour:
            words.append(self.colour)
        words.append(self.kind)
        if self.relation and self.anchor is not None:
            words += [self.relation, self.anchor.text()]
        return " ".join(words)

    @property
    def complexity(self) -> int:
        own = sum(x is not None for x in (self.colour, self.size, self.superlative))
        return own + (2 + self.anchor.complexity if self.anchor is not None else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Expr:
        anchor = d.get("anchor")
        return cls(
            d["kind"], d.get("colour"), d.get("size"), d.get("superlative"), d.get("relation"),
            cls.from_dict(anchor) if anchor else None,
        )


def _measure(scene: Scene, i: int, measure: str) -> float:
    box = scene.box(i)
    if measure == "cx":
        return box.center[0]
    if measure == "cy":
        return box.center[1]
    return box.area


def denote(scene: Scene, expr: Expr, config: ShapesConfig | None = None) -> set[int]:
    """The shapes an expression can refer to; an ambiguous anchor or a tie yields several."""
    base = [
        i
        for i, s in enumerate(scene.shapes)
        if s.kind == expr.kind
        and (expr.colour is None or s.colour == expr.colour)
        and (expr.size is None or s.size == expr.size)
    ]
    if expr.relation is not None:
        if expr.anchor is None:
            raise ValueError(f"expression {expr} has a relation but no anchor")
        anchors = denote(scene, expr.anchor, config)
        base = [i for i in base if any(relation_holds(scene, expr.relation, i, a, config) for a in anchors)]
        if len(anchors) != 1:
            # "the circle left of the square" with two squares: no single reading
            return set(base) | {-1}
    if expr.superlative is not None and base:
        measure, sign = SUPERLATIVES[expr.superlative]
        values = {i: sign * _measure(scene, i, measure) for i in base}
        best = max(values.values())
        tie = _TIE * (best if measure == "area" else 1.0)
        base = [i for i, v in values.items() if v >= best - abs(tie)]
    return set(base)


def is_unambiguous(scene: Scene, expr: Expr, target: int, config: ShapesConfig | None = None) -> bool:
    return denote(scene, expr, config) == {target}


def candidate_expressions(scene: Scene, target: int, config: ShapesConfig | None = None) -> list[Expr]:
    """Every expression of the language that picks out exactly ``target``, simplest first."""
    s = scene.shapes[target]
    simple = [
        Expr(s.kind),
        Expr(s.kind, colour=s.colour),
        Expr(s.kind, size=s.size),
        Expr(s.kind, colour=s.colour, size=s.size),
    ]
    # A superlative only where it compares: "the leftmost circle" needs two circles.
    supers = [
        Expr(s.kind, colour=colour, superlative=sup)
        for colour in (None, s.colour)
        if len(denote(scene, Expr(s.kind, colour=colour), config)) >= 2
        for sup in SUPERLATIVES
    ]
    out = [e for e in simple + supers if is_unambiguous(scene, e, target, config)]
    for j in range(len(scene.shapes)):
        if j == target:
            continue
        anchor = next((e for e in simple if is_unambiguous(scene, e, j, config)), None)
        if anchor is None:
            continue
        for rel in ("left of", "right of", "above", "below", "next to"):
            for head in (Expr(s.kind, relation=rel, anchor=anchor), Expr(s.kind, colour=s.colour, relation=rel, anchor=anchor)):
                if is_unambiguous(scene, head, target, config):
                    out.append(head)
    seen: set[Expr] = set()
    unique = [e for e in out if not (e in seen or seen.add(e))]
    return sorted(unique, key=lambda e: e.complexity)


def choose_expression(
    scene: Scene, target: int, rng: np.random.Generator, config: ShapesConfig | None = None, simple_bias: float = 0.6
) -> Expr:
    """A varied but unambiguous expression: the simplest with probability ``simple_bias``."""
    cands = candidate_expressions(scene, target, config)
    if not cands:  # cannot happen: (kind, colour, size) triples are unique within a scene
        raise RuntimeError(f"scene {scene.id}: no unambiguous expression for shape {target}")
    if rng.random() < simple_bias:
        return cands[0]
    return cands[int(rng.integers(len(cands)))]


def name_with_article(scene: Scene, i: int, with_size: bool = False) -> str:
    s = scene.shapes[i]
    words = ([s.size] if with_size else []) + [s.colour, s.kind]
    article = "an" if words[0][0] in "aeiou" else "a"
    return f"{article} {' '.join(words)}"


def position_words(scene: Scene, i: int) -> str:
    """Where a shape sits in the image, in thirds: 'in the top left', 'on the right', 'in the centre'..."""
    x1, y1, x2, y2 = scene.shapes[i].px
    cx, cy = (x1 + x2) / 2 / scene.width, (y1 + y2) / 2 / scene.height
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    if row and col:
        return f"in the {row} {col}"
    if row:
        return f"at the {row}"
    return f"on the {col}" if col else "in the centre"
