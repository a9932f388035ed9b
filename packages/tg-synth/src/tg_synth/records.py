"""The records the steps pass along: images, detections, grounded instances, relation triples.

Each has a plain JSON form, because step results live in the cache as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tg_data.box import Box
from tg_data.coords import render_box


@dataclass(frozen=True)
class Annotation:
    """An existing box for an image (RefCOCO, Visual Genome...), merged into S1 in step 2."""

    label: str
    box: Box
    source: str = "annotation"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "box": self.box.to_list(), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Annotation:
        return cls(str(d["label"]), Box.from_list(d["box"]), str(d.get("source") or "annotation"))


@dataclass(frozen=True)
class ImageItem:
    """One input image: ``image`` is relative to the run's image root (or absolute / a URI)."""

    id: str
    image: str
    width: int
    height: int
    annotations: tuple[Annotation, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Detection:
    label: str
    box: Box
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "box": [round(v, 6) for v in self.box.to_list()], "score": round(self.score, 6)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Detection:
        return cls(str(d["label"]), Box.from_list(d["box"]), float(d["score"]))


@dataclass(frozen=True)
class Instance:
    """A grounded object of S1: one box of one listed object, with the id prompts refer to it by."""

    id: int
    label: str
    box: Box
    score: float
    source: str  # "detector" | "annotation"

    def prompt_view(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.label, "box": render_box(self.box)}


@dataclass(frozen=True)
class Triple:
    subject: int
    relation: str
    object: int

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "relation": self.relation, "object": self.object}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Triple:
        return cls(int(d["subject"]), str(d["relation"]), int(d["object"]))
