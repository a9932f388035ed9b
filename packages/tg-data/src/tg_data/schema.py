"""The sample schema every package reads and writes: ``Sample``, ``Turn``, ``ObjectRef``.

Placeholders tie the text to the pixels: a sample with an image has exactly one ``<image>`` in its
turns, and the n-th ``<object>`` placeholder is the n-th object whose ``show`` is ``image``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tg_data.box import Box, BoxError

IMAGE_TOKEN = "<image>"
OBJECT_TOKEN = "<object>"


class SampleError(ValueError):
    """A record that breaks the schema; the message names the record and what to fix."""


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class Show(StrEnum):
    """How an object appears in the turns."""

    TEXT = "text"  # by its name or expression
    COORD = "coord"  # as coordinate text
    IMAGE = "image"  # as an object image, through an <object> placeholder


class Task(StrEnum):
    CAPTION = "caption"
    REC = "rec"
    REG = "reg"
    VQA = "vqa"
    OBJ2COORD = "obj2coord"
    COORD2OBJ = "coord2obj"
    TEXT2OBJ = "text2obj"
    RELATION = "relation"
    GROUNDED_CONV = "grounded_conv"
    GROUNDED_DESC = "grounded_desc"
    POPE = "pope"


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    text: str

    def __post_init__(self) -> None:
        if self.role not in Role._value2member_map_:
            raise SampleError(f"unknown role {self.role!r}; expected one of {[r.value for r in Role]}")
        if not isinstance(self.text, str):
            raise SampleError(f"turn text must be a string, got {type(self.text).__name__}")

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "text": self.text}


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An object of the sample: where it is, and how the turns show it.

    ``image`` is the picture an object image is cropped from (default: the sample's image);
    ``margin`` is the crop's context margin as a fraction of the box size (default: the model's).
    """

    box: Box
    show: str = Show.COORD.value
    label: str | None = None
    image: str | None = None
    margin: float | None = None

    def __post_init__(self) -> None:
        if self.show not in Show._value2member_map_:
            raise SampleError(f"unknown object show mode {self.show!r}; expected one of {[s.value for s in Show]}")
        if self.margin is not None and not (0 <= self.margin <= 10):
            raise SampleError(f"object margin must be in [0, 10] (fraction of box size), got {self.margin}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box.to_list(),
            "show": self.show,
            "label": self.label,
            "image": self.image,
            "margin": self.margin,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectRef:
        if "box" not in d:
            raise SampleError("object has no 'box'")
        return cls(
            box=Box.from_list(d["box"]),
            show=d.get("show") or Show.COORD.value,
            label=d.get("label"),
            image=d.get("image"),
            margin=d.get("margin"),
        )


@dataclass(frozen=True, slots=True)
class Sample:
    id: str
    turns: list[Turn]
    image: str | None = None
    objects: list[ObjectRef] = field(default_factory=list)
    task: str = Task.VQA.value
    source: str = ""
    width: int | None = None
    height: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            raise SampleError("sample has an empty id")
        for problem in self.problems():
            raise SampleError(f"sample {self.id!r}: {problem}")

    def problems(self) -> list[str]:
        """Why this sample is inconsistent (empty when it is fine)."""
        out: list[str] = []
        if not self.turns:
            out.append("has no turns")
        n_image = sum(t.text.count(IMAGE_TOKEN) for t in self.turns)
        want_image = 1 if self.image else 0
        if n_image != want_image:
            out.append(
                f"has {n_image} {IMAGE_TOKEN} placeholder(s) but "
                + ("an image" if self.image else "no image")
                + f"; expected {want_image}"
            )
        n_obj = sum(t.text.count(OBJECT_TOKEN) for t in self.turns)
        want_obj = len(self.object_images)
        if n_obj != want_obj:
            out.append(
                f"has {n_obj} {OBJECT_TOKEN} placeholder(s) but {want_obj} object(s) shown as images"
            )
        if want_obj and not self.image and any(o.image is None for o in self.object_images):
            out.append("shows object images but has no image to crop them from")
        if (self.width is None) != (self.height is None):
            out.append("has only one of width/height")
        if self.width is not None and self.height is not None and (self.width <= 0 or self.height <= 0):
            out.append(f"has a non-positive size {self.width}x{self.height}")
        return out

    @property
    def object_images(self) -> list[ObjectRef]:
        """Objects in the order their ``<object>`` placeholders appear."""
        return [o for o in self.objects if o.show == Show.IMAGE.value]

    @property
    def size(self) -> tuple[int, int] | None:
        return (self.width, self.height) if self.width is not None and self.height is not None else None

    # serialised form ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The stable serialised form (JSON Lines rows, Parquet rows); ``meta`` is a JSON string."""
        return {
            "id": self.id,
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "task": self.task,
            "source": self.source,
            "objects": [o.to_dict() for o in self.objects],
            "turns": [t.to_dict() for t in self.turns],
            "meta": json.dumps(self.meta, sort_keys=True, ensure_ascii=False) if self.meta else "",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        """Inverse of ``to_dict``; raises ``SampleError`` naming the sample and the bad field."""
        if not isinstance(d, dict):
            raise SampleError(f"a sample must be an object, got {type(d).__name__}")
        sid = d.get("id")
        if sid is None or str(sid) == "":
            raise SampleError("sample has no 'id'")
        sid = str(sid)
        try:
            turns_raw = d.get("turns")
            if not isinstance(turns_raw, list):
                raise SampleError("'turns' must be a list of {role, text}")
            turns = []
            for t in turns_raw:
                if not isinstance(t, dict) or "role" not in t or "text" not in t:
                    raise SampleError(f"turn {t!r} must have 'role' and 'text'")
                turns.append(Turn(str(t["role"]), t["text"]))
            objects = [ObjectRef.from_dict(o) for o in (d.get("objects") or [])]
            meta = d.get("meta") or {}
            if isinstance(meta, str):
                meta = json.loads(meta)
            return cls(
                id=sid,
                turns=turns,
                image=d.get("image") or None,
                objects=objects,
                task=d.get("task") or Task.VQA.value,
                source=d.get("source") or "",
                width=d.get("width"),
                height=d.get("height"),
                meta=meta,
            )
        except SampleError as e:
            msg = str(e)
            raise SampleError(msg if msg.startswith("sample ") else f"sample {sid!r}: {msg}") from None
        except (BoxError, json.JSONDecodeError, TypeError, ValueError) as e:
            raise SampleError(f"sample {sid!r}: {e}") from None
