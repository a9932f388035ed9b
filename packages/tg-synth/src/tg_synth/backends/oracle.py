"""Oracle backends for the shapes world: they answer every step from the scene's truth.

They stand in for GPT-4V and GroundingDINO so the whole pipeline runs on a CPU with nothing
downloaded. They are imperfect on purpose, in the ways the real models are, so that the filters
have work to do: the recogniser sometimes lists an object that is not there or a generic label
("shape"), and the detector sometimes scores a true box low or adds a loose second box.
Every choice is seeded by (seed, image id, step), so answers do not depend on call order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from tg_data.box import Box
from tg_data.coords import parse_box
from tg_data.shapes.language import candidate_expressions, name_with_article, position_words
from tg_data.shapes.scene import COLOURS, KINDS, Scene, relations
from tg_synth.backends.base import ChatReply, ChatRequest, DetectRequest, Usage
from tg_synth.cache import stable_hash
from tg_synth.config import ChatConfig, DetectorConfig
from tg_synth.records import Detection

GENERIC_LABELS = ("shape", "shapes", "object", "objects")
ORACLE_VERSION = "oracle-shapes/1"


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(int(stable_hash([seed, *[str(p) for p in parts]])[:16], 16))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _list_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class ShapesOracle:
    """The truth behind every answer; shared by the in-process backends and the loopback server.

    What a scene implies (boxes, relations, unambiguous expressions) is computed once per scene, so
    an answer costs little: the loopback endpoint must keep up with hundreds of calls per second.
    """

    def __init__(self, scenes: dict[str, Scene], chat: ChatConfig | None = None, seed: int = 0) -> None:
        self.scenes = scenes
        self.chat = chat or ChatConfig()
        self.seed = seed
        self._boxes: dict[str, list[Box]] = {}
        self._relations: dict[str, list[tuple[int, str, int]]] = {}
        self._expressions: dict[tuple[str, int], list[str]] = {}

    def scene(self, image_id: str) -> Scene:
        try:
            return self.scenes[image_id]
        except KeyError:
            raise KeyError(f"the oracle knows no shapes scene {image_id!r}") from None

    def boxes(self, scene: Scene) -> list[Box]:
        if scene.id not in self._boxes:
            self._boxes[scene.id] = scene.boxes
        return self._boxes[scene.id]

    def relations(self, scene: Scene) -> list[tuple[int, str, int]]:
        if scene.id not in self._relations:
            self._relations[scene.id] = relations(scene)
        return self._relations[scene.id]

    def warm(self) -> None:
        """Work out every scene's facts now (an endpoint does this before it takes calls)."""
        for scene in self.scenes.values():
            self.relations(scene)
            self.boxes(scene)
            for j in range(len(scene.shapes)):
                self.expression(scene, j, random.Random(0))

    def expression(self, scene: Scene, j: int, rng: random.Random) -> str:
        """An unambiguous expression for shape ``j``: the simplest most of the time, else any."""
        key = (scene.id, j)
        if key not in self._expressions:
            self._expressions[key] = [e.text() for e in candidate_expressions(scene, j)]
        cands = self._expressions[key]
        return cands[0] if rng.random() < 0.6 else cands[rng.randrange(len(cands))]

    # mapping the listed instances to the scene's shapes ---------------------------------------------
    def match(self, scene: Scene, objects: list[dict[str, Any]]) -> dict[int, int]:
        """Instance id -> shape index, one to one, by IoU >= 0.5 and a name that fits the shape."""
        if not objects or not scene.shapes:
            return {}
        truth = self.boxes(scene)
        pairs: list[tuple[float, int, int]] = []
        for k, obj in enumerate(objects):
            box = parse_box(str(obj["box"]))
            if box is None:
                continue
            for j, t in enumerate(truth):
                iou = box.iou(t)
                if iou >= 0.5 and self._name_fits(str(obj["name"]), scene, j):
                    pairs.append((iou, k, j))
        out: dict[int, int] = {}
        used: set[int] = set()
        for _iou, k, j in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            oid = int(objects[k]["id"])
            if oid not in out and j not in used:
                out[oid] = j
                used.add(j)
        return out

    @staticmethod
    def _name_fits(name: str, scene: Scene, j: int) -> bool:
        s = scene.shapes[j]
        words = name.lower().split()
        if name.lower() in GENERIC_LABELS:
            return True
        return s.kind in words and all(w in (s.kind, s.colour, s.size) for w in words)

    # chat steps ---------------------------------------------------------------------------------
    def answer(self, step: str, inputs: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"_{step}", None)
        if handler is None:
            raise ValueError(f"the shapes oracle cannot answer step {step!r}")
        image_id = str(inputs["image_id"])
        return handler(self.scene(image_id), inputs, _rng(self.seed, image_id, step))

    def _recognize(self, scene: Scene, inputs: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        order = sorted(range(len(scene.shapes)), key=lambda i: scene.shapes[i].px[0])
        names: list[str] = []
        for i in order:
            if scene.shapes[i].name not in names:
                names.append(scene.shapes[i].name)
        if rng.random() < self.chat.hallucination_rate:
            absent = [f"{c} {k}" for c in COLOURS for k in KINDS if f"{c} {k}" not in names]
            names.insert(rng.randrange(len(names) + 1), rng.choice(absent))
        if rng.random() < self.chat.generic_label_rate:
            names.append("shape")
        return {"objects": names[: int(inputs.get("max_objects", 20))]}

    def _relate(self, scene: Scene, inputs: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        ids = self.match(scene, inputs["objects"])
        shape_to_id = {j: i for i, j in ids.items()}
        triples = [
            {"subject": shape_to_id[a], "relation": rel, "object": shape_to_id[b]}
            for a, rel, b in self.relations(scene)
            if a in shape_to_id and b in shape_to_id
        ]
        limit = min(int(inputs.get("max_relations", self.chat.max_relations)), self.chat.max_relations)
        if len(triples) > limit:
            triples = [triples[k] for k in sorted(rng.sample(range(len(triples)), limit))]
        return {"relations": triples}

    def _refer(self, scene: Scene, inputs: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        ids = self.match(scene, inputs["objects"])
        return {"expressions": [{"id": i, "expression": self.expression(scene, j, rng)} for i, j in sorted(ids.items())]}

    def _converse(self, scene: Scene, inputs: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        ids = self.match(scene, inputs["objects"])
        by_shape = {j: i for i, j in ids.items()}
        listed = sorted(by_shape, key=lambda j: scene.shapes[j].px[0])

        def mention(j: int, indefinite: bool = False) -> str:
            name = name_with_article(scene, j) if indefinite else f"the {scene.shapes[j].name}"
            return f"{name} {{{by_shape[j]}}}"

        turns = [{
            "question": "What shapes are in the image?",
            "answer": f"There {'is' if len(listed) == 1 else 'are'} {_plural(len(listed), 'shape')}: "
            + _list_words([mention(j, indefinite=True) for j in listed]) + ".",
        }]
        kinds = ["where", "count", "relation"]
        rng.shuffle(kinds)
        triples = [(a, rel, b) for a, rel, b in self.relations(scene)
                   if a in by_shape and b in by_shape and rel != "next to"]
        for kind in kinds:
            if len(turns) >= int(inputs.get("rounds", 3)) or not listed:
                break
            j = listed[rng.randrange(len(listed))]
            if kind == "where":
                expr = self.expression(scene, j, rng)
                turns.append({"question": f"Where is {expr}?",
                              "answer": f"{expr.capitalize()} {{{by_shape[j]}}} is {position_words(scene, j)}."})
            elif kind == "count":
                k = scene.shapes[j].kind
                same = [x for x in listed if scene.shapes[x].kind == k]
                turns.append({"question": f"How many {k}s are there?",
                              "answer": f"There {'is' if len(same) == 1 else 'are'} {_plural(len(same), k)}: "
                              + _list_words([mention(x) for x in same]) + "."})
            elif triples:
                a, rel, b = triples[rng.randrange(len(triples))]
                turns.append({"question": f"What is {rel} the {scene.shapes[b].name}?",
                              "answer": f"{mention(a).capitalize()} is {rel} {mention(b)}."})
        return {"turns": turns}

    def _describe(self, scene: Scene, inputs: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        ids = self.match(scene, inputs["objects"])
        by_shape = {j: i for i, j in ids.items()}
        order = sorted(by_shape, key=lambda j: (scene.shapes[j].px[1], scene.shapes[j].px[0]))
        bg = ("textured " if scene.textured else "") + scene.background
        parts = [f"The image shows {_plural(len(order), 'shape')} on a {bg} background."]
        for j in order:
            s = scene.shapes[j]
            parts.append(f"A {s.size} {s.colour} {s.kind} {{{by_shape[j]}}} is {position_words(scene, j)}.")
        triples = [(a, rel, b) for a, rel, b in self.relations(scene)
                   if a in by_shape and b in by_shape and rel in ("left of", "above", "bigger than")]
        for a, rel, b in triples[:3]:
            parts.append(f"The {scene.shapes[a].name} {{{by_shape[a]}}} is {rel} the {scene.shapes[b].name} {{{by_shape[b]}}}.")
        return {"description": " ".join(parts)}

    # detection ----------------------------------------------------------------------------------
    def detect(self, image_id: str, labels: Sequence[str], det: DetectorConfig) -> list[Detection]:
        scene = self.scene(image_id)
        out: list[Detection] = []
        truth = self.boxes(scene)
        for label in labels:
            rng = _rng(self.seed, image_id, "detect", label)
            generic = label.lower() in GENERIC_LABELS
            hits = [j for j in range(len(scene.shapes)) if generic or self._name_fits(label, scene, j)]
            for j in hits:
                box = truth[j]
                if generic:
                    score = rng.uniform(0.36, 0.55)
                elif rng.random() < det.low_confidence_rate:
                    score = rng.uniform(0.05, 0.3)
                else:
                    score = rng.uniform(0.6, 0.98)
                out.append(Detection(label, box, score))
                if not generic and rng.random() < det.loose_box_rate:
                    out.append(Detection(label, _enlarged(box, 1.35), rng.uniform(0.4, 0.6)))
        return out


def _enlarged(box: Box, factor: float) -> Box:
    cx, cy = box.center
    w, h = box.width * factor / 2, box.height * factor / 2
    return Box.clipped(cx - w, cy - h, cx + w, cy + h)


class OracleChat:
    """``ChatBackend`` answering from the shapes world's truth, in process."""

    def __init__(self, oracle: ShapesOracle) -> None:
        self.oracle = oracle
        c = oracle.chat
        self.name = f"{ORACLE_VERSION}:h={c.hallucination_rate}:g={c.generic_label_rate}:r={c.max_relations}:s={oracle.seed}"

    async def complete(self, request: ChatRequest) -> ChatReply:
        answer = self.oracle.answer(request.step, request.inputs)
        return ChatReply(json.dumps(answer, ensure_ascii=False), Usage(calls=1))

    def cost(self, usage: Usage) -> float:
        return 0.0

    async def aclose(self) -> None:
        return None


class OracleDetector:
    """``Detector`` answering from the shapes world's truth."""

    def __init__(self, oracle: ShapesOracle, cfg: DetectorConfig) -> None:
        self.oracle = oracle
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        self.name = f"{ORACLE_VERSION}:low={cfg.low_confidence_rate}:loose={cfg.loose_box_rate}:s={oracle.seed}"

    def detect(self, requests: Sequence[DetectRequest]) -> list[list[Detection]]:
        return [self.oracle.detect(r.image_id, r.labels, self.cfg) for r in requests]
