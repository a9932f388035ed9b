"""Flickr30K Entities: captions whose phrases are tied to boxes.

Upstream layout (BryanPlummer/flickr30k_entities)::

    Sentences/<image_id>.txt     five captions, one per line, phrases marked up as
                                 [/EN#<phrase_id>/<type>[/<type>...] <words>]
    Annotations/<image_id>.xml   PASCAL-VOC style: <size><width/><height/></size> and <object>s,
                                 each with one or more <name>phrase_id</name> and either a
                                 <bndbox> (xmin..ymax, 1-based inclusive pixels) or <nobndbox>/<scene>
    train.txt, val.txt, test.txt image ids of each split

Example sentence: ``[/EN#18/people A child] in [/EN#19/clothing a pink dress] is climbing up
[/EN#20/other a set of stairs] .`` Phrase id 0 (``notvisual``) and phrases whose objects have no box
stay plain text. A phrase with several boxes (``two dogs``) keeps them all (``boxes="keep"``) or their
enclosing box (``boxes="merge"``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal

import fsspec

from tg_data.box import Box
from tg_data.coords import render_box
from tg_data.io import DataError, SkipReport
from tg_data.prompts import GROUNDED_CAPTION_PROMPT, REC_PROMPT
from tg_data.readers._common import convert_records, image_path, pixel_box
from tg_data.schema import IMAGE_TOKEN, ObjectRef, Sample, Show, Task, Turn

_PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s/\[\]]+)*)\s+([^\[\]]*?)\s*\]")
BoxMode = Literal["merge", "keep"]


@dataclass(frozen=True)
class Phrase:
    text: str
    phrase_id: str
    types: tuple[str, ...]
    start: int  # character offsets in the plain sentence
    end: int


@dataclass(frozen=True)
class EntitySentence:
    text: str
    phrases: tuple[Phrase, ...]


@dataclass(frozen=True)
class EntityAnnotation:
    width: int
    height: int
    boxes: dict[str, list[tuple[float, float, float, float]]]  # phrase id -> pixel corners
    nobox: frozenset[str]
    scene: frozenset[str]


def parse_sentence(line: str) -> EntitySentence:
    """Plain text and phrases of one marked-up sentence."""
    parts: list[str] = []
    phrases: list[Phrase] = []
    pos = 0
    length = 0
    for m in _PHRASE.finditer(line):
        before = line[pos : m.start()]
        parts.append(before)
        length += len(before)
        words = " ".join(m.group(3).split())
        phrases.append(Phrase(words, m.group(1), tuple(t for t in m.group(2).split("/") if t), length, length + len(words)))
        parts.append(words)
        length += len(words)
        pos = m.end()
    parts.append(line[pos:])
    text = "".join(parts)
    if "[/EN#" in text:
        raise ValueError(f"malformed phrase markup in {line.strip()!r}")
    lead = len(text) - len(text.lstrip())
    return EntitySentence(text.strip(), tuple(replace(p, start=p.start - lead, end=p.end - lead) for p in phrases))


def parse_annotation(xml_text: str) -> EntityAnnotation:
    """Boxes per phrase id, as pixel corners (the 1-based inclusive VOC box ``xmin..xmax`` covers
    corners ``xmin - 1 .. xmax``)."""
    root = ET.fromstring(xml_text)
    size = root.find("size")
    if size is None:
        raise ValueError("annotation has no <size>")
    width, height = int(size.findtext("width", "0")), int(size.findtext("height", "0"))
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    nobox: set[str] = set()
    scene: set[str] = set()
    for obj in root.findall("object"):
        names = [n.text.strip() for n in obj.findall("name") if n.text]
        bnd = obj.find("bndbox")
        for name in names:
            if bnd is not None:
                xmin, ymin, xmax, ymax = (float(bnd.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax"))
                boxes.setdefault(name, []).append((xmin - 1, ymin - 1, xmax, ymax))
            else:
                if int(obj.findtext("nobndbox", "0") or 0) > 0:
                    nobox.add(name)
                if int(obj.findtext("scene", "0") or 0) > 0:
                    scene.add(name)
    return EntityAnnotation(width, height, boxes, frozenset(nobox), frozenset(scene))


def _merge(boxes: list[Box]) -> Box:
    return Box(min(b.x1 for b in boxes), min(b.y1 for b in boxes), max(b.x2 for b in boxes), max(b.y2 for b in boxes))


def read_flickr30k_entities(
    path: str,
    split: str | None = None,
    ids: Iterable[str] | None = None,
    image_root: str | None = None,
    boxes: BoxMode = "merge",
    task: str = Task.GROUNDED_DESC.value,
    skip: SkipReport | None = None,
) -> Iterator[Sample]:
    """Samples from the Flickr30K Entities folder ``path`` (holding ``Sentences/`` and ``Annotations/``).

    ``task``: ``grounded_desc`` (one sample per caption, each grounded phrase followed by its
    coordinates) or ``rec`` (one per grounded phrase). ``split`` reads ``<path>/<split>.txt`` for the
    image ids; ``ids`` gives them directly; default: every caption file.
    """
    if boxes not in ("merge", "keep"):
        raise DataError(f"flickr30k: boxes must be 'merge' or 'keep', got {boxes!r}")
    if task not in (Task.GROUNDED_DESC.value, Task.REC.value):
        raise DataError(f"flickr30k: task must be 'grounded_desc' or 'rec', got {task!r}")
    root = path.rstrip("/")
    fs, p = fsspec.core.url_to_fs(root)
    if not fs.isdir(f"{p}/Sentences") or not fs.isdir(f"{p}/Annotations"):
        raise DataError(f"{path}: not a Flickr30K Entities folder (needs Sentences/ and Annotations/)")
    if split is not None:
        split_file = f"{root}/{split}.txt"
        try:
            with fsspec.open(split_file, "rt") as f:
                ids = [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            raise DataError(f"{split_file}: no such split file (expected train.txt, val.txt or test.txt)") from None
    if ids is None:
        names = fs.glob(f"{p}/Sentences/*.txt")
        ids = sorted((n.rsplit("/", 1)[-1][:-4] for n in names), key=lambda s: (len(s), s))

    @lru_cache(maxsize=8)
    def annotation(image_id: str) -> EntityAnnotation:
        xml_file = f"{root}/Annotations/{image_id}.xml"
        try:
            with fsspec.open(xml_file, "rt", encoding="utf-8") as f:
                return parse_annotation(f.read())
        except FileNotFoundError:
            raise ValueError(f"annotation file {xml_file} is missing") from None
        except ET.ParseError as e:
            raise ValueError(f"{xml_file} is not valid XML ({e})") from None

    def convert(item: tuple[str, int, str]) -> list[Sample]:
        image_id, k, line = item
        sent = parse_sentence(line)
        ann = annotation(image_id)
        grounded: list[tuple[Phrase, list[Box]]] = []
        phrase_meta: list[dict[str, Any]] = []  # "boxes": how many the annotation has, merged or not
        for ph in sent.phrases:
            pix = ann.boxes.get(ph.phrase_id) if ph.phrase_id != "0" else None
            if pix:
                found = [pixel_box(*b, ann.width, ann.height) for b in pix]
                grounded.append((ph, [_merge(found)] if boxes == "merge" else found))
                phrase_meta.append({"phrase": ph.text, "phrase_id": ph.phrase_id, "types": list(ph.types), "boxes": len(found)})
        image = image_path(image_root, f"{image_id}.jpg")
        common: dict[str, Any] = {"image": image, "width": ann.width, "height": ann.height, "source": "flickr30k"}
        if task == Task.REC.value:
            return [
                Sample(
                    id=f"flickr30k-{image_id}-{k}-{j}",
                    task=task,
                    objects=[ObjectRef(b, Show.COORD.value, label=ph.text) for b in bs],
                    turns=[
                        Turn("user", f"{IMAGE_TOKEN}\n{REC_PROMPT.format(expression=ph.text)}"),
                        Turn("assistant", " ".join(render_box(b) for b in bs)),
                    ],
                    meta={"image_id": image_id, "sentence": k, "caption": sent.text, **phrase_meta[j]},
                    **common,
                )
                for j, (ph, bs) in enumerate(grounded)
            ]
        text, last, objects = [], 0, []
        for ph, bs in grounded:
            text.append(sent.text[last : ph.end] + " " + " ".join(render_box(b) for b in bs))
            objects += [ObjectRef(b, Show.COORD.value, label=ph.text) for b in bs]
            last = ph.end
        text.append(sent.text[last:])
        return [
            Sample(
                id=f"flickr30k-{image_id}-{k}",
                task=task,
                objects=objects,
                turns=[Turn("user", f"{IMAGE_TOKEN}\n{GROUNDED_CAPTION_PROMPT}"), Turn("assistant", "".join(text))],
                meta={"image_id": image_id, "sentence": k, "caption": sent.text, "phrases": phrase_meta},
                **common,
            )
        ]

    return convert_records(_sentences(root, ids), convert, skip)


def _sentences(root: str, ids: Iterable[str]) -> Iterator[tuple[str, Any]]:
    for image_id in ids:
        sentence_file = f"{root}/Sentences/{image_id}.txt"
        try:
            with fsspec.open(sentence_file, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except FileNotFoundError:
            raise DataError(f"{sentence_file}: no such file (image {image_id} has no captions)") from None
        k = 0
        for lineno, line in enumerate(lines, 1):
            if line.strip():
                yield f"{sentence_file}:{lineno}", (image_id, k, line)
                k += 1
