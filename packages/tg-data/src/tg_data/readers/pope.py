"""POPE object-hallucination questions: label files and LLaVA-style question files.

Upstream formats, both JSON Lines (the label files carry a ``.json`` name nonetheless):

- label files (RUCAIBox/POPE ``output/coco/coco_pope_{random,popular,adversarial}.json``)::

      {"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
       "text": "Is there a snowboard in the image?", "label": "yes"}

- question files (LLaVA ``playground/data/eval/pope/llava_pope_test.jsonl``)::

      {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "category": "adversarial",
       "text": "Is there a snowboard in the image?\\nAnswer the question using a single word or phrase."}

The two number their questions differently and were cut from different POPE releases (a few texts
differ by spelling fixes), so questions are matched to labels by ``PopeRecord.key`` -- category,
image and the object asked about -- never by id or position. A label file's category comes from
its name (``coco_pope_popular.json``) unless given.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from tg_data.io import SkipReport
from tg_data.readers._common import convert_records, image_path, jsonl_records
from tg_data.schema import IMAGE_TOKEN, Sample, Task, Turn

POPE_CATEGORIES = ("random", "popular", "adversarial")
LLAVA_POPE_SUFFIX = "\nAnswer the question using a single word or phrase."
# "Is there a/an <object> in the image?" -- older releases spell it "imange".
_OBJECT = re.compile(r"\bis there (?:an? )?(.+?) in the ima\w*\s*\?", re.IGNORECASE)
_CATEGORY_IN_NAME = re.compile(r"(?:^|[_\-/])(random|popular|adversarial)(?:[_\-.]|$)")


def pope_object(text: str) -> str | None:
    """The object a POPE question asks about (``"Is there a dining table in the image?"`` ->
    ``"dining table"``), or ``None`` when the text is not a POPE question."""
    m = _OBJECT.search(text)
    return m.group(1).strip().lower() if m else None


def category_from_name(path: str) -> str | None:
    m = _CATEGORY_IN_NAME.search(path.rsplit("/", 1)[-1])
    return m.group(1) if m else None


@dataclass(frozen=True)
class PopeRecord:
    """One POPE question; ``label`` is ``"yes"``/``"no"`` in label files and ``None`` in question files."""

    question_id: int | str
    image: str
    text: str
    category: str | None
    label: str | None

    @property
    def question(self) -> str:
        """The question without a prompt suffix such as LLaVA's answer-format instruction."""
        return self.text.split("\n", 1)[0].strip()

    @property
    def object(self) -> str | None:
        return pope_object(self.text)

    @property
    def key(self) -> tuple[str | None, str, str]:
        """Joins a question to its label across files: (category, image, object asked about)."""
        return (self.category, self.image, self.object or self.question.lower())


def _record(rec: object, category: str | None) -> PopeRecord:
    if not isinstance(rec, dict):
        raise ValueError(f"a POPE record must be a JSON object, got {type(rec).__name__}")
    for field in ("question_id", "image", "text"):
        if field not in rec:
            raise ValueError(f"POPE record has no {field!r}")
    if not isinstance(rec["image"], str) or not isinstance(rec["text"], str):
        raise ValueError("POPE 'image' and 'text' must be strings")
    label = rec.get("label")
    if label is not None:
        label = str(label).strip().lower()
        if label not in ("yes", "no"):
            raise ValueError(f"POPE label must be 'yes' or 'no', got {rec['label']!r}")
    return PopeRecord(rec["question_id"], rec["image"], rec["text"], rec.get("category") or category, label)


def read_pope_records(path: str, category: str | None = None, skip: SkipReport | None = None) -> Iterator[PopeRecord]:
    """Typed records of a POPE label file or question file (for scoring)."""
    category = category or category_from_name(path)
    return convert_records(jsonl_records(path), lambda rec: [_record(rec, category)], skip)


def pope_record_to_sample(rec: PopeRecord, image_root: str | None = None) -> Sample:
    turns = [Turn("user", f"{IMAGE_TOKEN}\n{rec.text}")]
    if rec.label is not None:
        turns.append(Turn("assistant", rec.label.capitalize()))
    return Sample(
        id=f"pope-{rec.category or 'unknown'}-{rec.question_id}",
        image=image_path(image_root, rec.image),
        task=Task.POPE.value,
        source="pope",
        turns=turns,
        meta={
            "question_id": rec.question_id,
            "category": rec.category,
            "label": rec.label,
            "object": rec.object,
            "image_name": rec.image,
        },
    )


def read_pope(
    path: str, image_root: str | None = None, category: str | None = None, skip: SkipReport | None = None
) -> Iterator[Sample]:
    """POPE questions as samples: the user asks, and the assistant answers Yes/No when labelled."""
    category = category or category_from_name(path)
    return convert_records(
        jsonl_records(path), lambda rec: [pope_record_to_sample(_record(rec, category), image_root)], skip
    )
