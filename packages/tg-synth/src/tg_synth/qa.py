"""Building tg-data samples from one image's L1, S1, L2 and the LLM's answers (step 4's output).

Stage 2 (fine-grained): object image -> coordinates, coordinates -> which object image, expression ->
which object image, region description (REG), expression -> coordinates (REC), and relation questions
whose objects are object images, in the question (yes/no) or in the options (choice).
Stage 3 (global): multi-round grounding conversations and grounding descriptions, whose ``{id}``
marks become coordinate text. Each task draws from its own seeded stream, so changing how many
QAs one task makes leaves the others unchanged.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tg_data.coords import render_box
from tg_data.schema import IMAGE_TOKEN, OBJECT_TOKEN, ObjectRef, Sample, Show, Turn
from tg_synth.cache import stable_hash
from tg_synth.config import QAConfig
from tg_synth.filters import FilterReport, choose_options
from tg_synth.parsing import MARKER
from tg_synth.prompting import PromptTemplate, pick
from tg_synth.records import ImageItem, Instance, Triple

SOURCE = "tg-synth"
# relations for which "a rel b" rules out "b rel a": their swapped triples make "No" questions
ANTISYMMETRIC = frozenset({
    "left of", "right of", "above", "below", "bigger than", "smaller than", "on top of", "under",
    "in front of", "behind",
})
STAGE = {t: 2 for t in ("obj2coord", "coord2obj", "text2obj", "reg", "rec", "relation")} | {
    "grounded_conv": 3, "grounded_desc": 3,
}


@dataclass
class ImageFacts:
    """Everything known about one image after steps 1-4."""

    item: ImageItem
    image: str  # the path samples carry
    instances: list[Instance]
    usable: list[Instance]  # instances that passed the object-image filters
    relations: list[Triple] = field(default_factory=list)
    expressions: dict[int, str] | None = None  # None: the refer step did not finish
    conversation: list[dict[str, str]] | None = None
    description: str | None = None

    def by_id(self) -> dict[int, Instance]:
        return {i.id: i for i in self.instances}


def task_rng(seed: int, image_id: str, task: str) -> random.Random:
    return random.Random(int(stable_hash([seed, image_id, task])[:16], 16))


def _ask(question: str, answer: str) -> list[Turn]:
    return [Turn("user", f"{IMAGE_TOKEN}\n{question}"), Turn("assistant", answer)]


def _options_text(questions: PromptTemplate, n: int) -> str:
    opts = questions.extra["options"]
    items = [string.Template(opts["item"]).substitute(letter=string.ascii_uppercase[k], option=OBJECT_TOKEN)
             for k in range(n)]
    return f"{opts['lead']} " + " ".join(items)


def render_marks(text: str, by_id: dict[int, Instance], objects: list[ObjectRef]) -> str:
    """``{3}`` -> the coordinate text of instance 3, recording each mention as a coordinate object."""

    def sub(m: Any) -> str:
        inst = by_id[int(m.group(1))]
        objects.append(ObjectRef(inst.box, Show.COORD.value, label=inst.label))
        return render_box(inst.box)

    return MARKER.sub(sub, text)


class QABuilder:
    def __init__(self, qa: QAConfig, questions: PromptTemplate, max_option_iou: float, seed: int) -> None:
        self.qa = qa
        self.q = questions
        self.max_option_iou = max_option_iou
        self.seed = seed

    def build(self, facts: ImageFacts, report: FilterReport) -> list[Sample]:
        out: list[Sample] = []
        for task, count in self.qa.counts().items():
            if count > 0:
                rng = task_rng(self.seed, facts.item.id, task)
                out.extend(getattr(self, task)(facts, count, rng, report))
        return out

    # helpers ------------------------------------------------------------------------------------
    def _sample(self, facts: ImageFacts, task: str, k: int, turns: list[Turn], objects: list[ObjectRef],
                **meta: Any) -> Sample:
        item = facts.item
        return Sample(
            id=f"{item.id}-{task}-{k}", image=facts.image, width=item.width, height=item.height, task=task,
            source=SOURCE, objects=objects, turns=turns,
            meta={"stage": STAGE[task], "image_id": item.id, **meta},
        )

    def _image_ref(self, inst: Instance) -> ObjectRef:
        return ObjectRef(inst.box, Show.IMAGE.value, label=inst.label, margin=self.qa.crop_margin)

    def _question(self, section: str, rng: random.Random, **values: str) -> str:
        return pick(self.q, section, rng.randrange(1000)).substitute(values)

    def _choice(self, facts: ImageFacts, task: str, k: int, correct: Instance, pool: Sequence[Instance],
                question: str, rng: random.Random, report: FilterReport, lead: list[ObjectRef] | None = None,
                **meta: Any) -> Sample | None:
        options = choose_options(correct, pool, self.qa.max_options, self.max_option_iou, rng, report)
        if options is None:
            return None
        letter = string.ascii_uppercase[options.index(correct)]
        objects = [*(lead or []), *(self._image_ref(o) for o in options)]
        turns = _ask(f"{question} {_options_text(self.q, len(options))}", letter)
        return self._sample(facts, task, k, turns, objects, answer=letter, **meta)

    # stage 2 ------------------------------------------------------------------------------------
    def obj2coord(self, facts: ImageFacts, n: int, rng: random.Random, report: FilterReport) -> list[Sample]:
        targets = list(facts.usable)
        rng.shuffle(targets)
        out = []
        for k, inst in enumerate(targets[:n]):
            turns = _ask(self._question("obj2coord", rng, object=OBJECT_TOKEN), render_box(inst.box))
            out.append(self._sample(facts, "obj2coord", k, turns, [self._image_ref(inst)], target=inst.id))
        return out

    def coord2obj(self, facts: ImageFacts, n: int, rng: random.Random, report: FilterReport) -> list[Sample]:
        targets = list(facts.usable)
        rng.shuffle(targets)
        out = []
        for inst in targets[:n]:
            q = self._question("coord2obj", rng, coord=render_box(inst.box))
            s = self._choice(facts, "coord2obj", len(out), inst, facts.usable, q, rng, report, target=inst.id)
            if s is not None:
                out.append(s)
        return out

    def text2obj(self, facts: ImageFacts, n: int, rng: random.Random, report: FilterReport) -> list[Sample]:
        if facts.expressions is None:
            return []
        targets = [i for i in facts.usable if i.id in facts.expressions]
        rng.shuffle(targets)
        out = []
        for inst in targets[:n]:
            q = self._question("text2obj", rng, expression=facts.expressions[inst.id])
            s = self._choice(facts, "text2obj", len(out), inst, facts.usable, q, rng, report, target=inst.id)
            if s is not None:
                out.append(s)
        return out

    def reg(self, facts: ImageFacts, n: int, rng: random.Random, report: FilterReport) -> list[Sample]:
        if facts.expressions is None:
            return []
        targets = [i for i in facts.instances if i.id in facts.expressions]
        rng.shuffle(targets)
        out = []
        for k, inst in enumerate(targets[:n]):
            expr = facts.expressions[inst.id]
            turns = _ask(self._question("reg", rng, coord=render_box(inst.box)), expr[0].upper() + expr[1:] + ".")
            obj = ObjectRef(inst.box, Show.COORD.value, label=expr)
            out.append(self._sample(facts, "reg", k, turns, [obj], target=inst.id))
        return out

    def rec(self, facts: ImageFacts, n: int, rng: random.Random, report: FilterReport) -> list[Sample]:
        if facts.expressions is None:
            return []
        targets = [i for i in facts.instances if i.id in facts.expressions]
        rng.shuffle(targets)
        out = []
        for k, inst in enumerate(targets[:n]):
            expr = facts.expressions[inst.id]
            turns = _ask(self._question("rec", rng, expression=expr), render_box(inst.box))
            obj = ObjectRef(inst.box, Show.COORD.value, label=expr)
            out.append(self._sample(facts, "rec", k, turns, [obj], target=inst.id, expression=expr))
        return out

    def relation(self, facts: ImageFacts, n: int, rng: random.Random, report: FilterReport) -> list[Sample]:
        usable = {i.id: i for i in facts.usable}
        stated = {(t.subject, t.relation, t.object) for t in facts.relations}
        triples = [t for t in facts.relations if t.subject in usable and t.object in usable]
        if not triples:
            return []
        rng.shuffle(triples)
        forms = ["yes", "choice", "no"]
        out: list[Sample] = []
        for t in triples:
            if len(out) >= n:
                break
            form = forms[len(out) % len(forms)]
            subj, obj = usable[t.subject], usable[t.object]
            if form == "no" and (t.relation not in ANTISYMMETRIC or (t.object, t.relation, t.subject) in stated):
                form = "yes"
            if form in ("yes", "no"):
                a, b = (subj, obj) if form == "yes" else (obj, subj)
                q = self._question("relation_yesno", rng, subject=OBJECT_TOKEN, relation=t.relation, object=OBJECT_TOKEN)
                answer = "Yes" if form == "yes" else "No"
                out.append(self._sample(facts, "relation", len(out), _ask(q, answer),
                                        [self._image_ref(a), self._image_ref(b)], relation=t.relation, form=form))
                continue
            # choice: the anchor object is an object image in the question; the options are object images
            pool = [subj] + [
                i for i in facts.usable
                if i.id not in (subj.id, obj.id) and (i.id, t.relation, obj.id) not in stated
            ]
            q = self._question("relation_choice", rng, relation=t.relation, object=OBJECT_TOKEN)
            s = self._choice(facts, "relation", len(out), subj, pool, q, rng, report,
                             lead=[self._image_ref(obj)], relation=t.relation, form="choice")
            if s is not None:
                out.append(s)
        return out

    # stage 3 ------------------------------------------------------------------------------------
    def grounded_conv(self, facts: ImageFacts, n: int, rng: random.Random, report: FilterReport) -> list[Sample]:
        if not facts.conversation or n < 1:
            return []
        by_id = facts.by_id()
        objects: list[ObjectRef] = []
        turns: list[Turn] = []
        for k, t in enumerate(facts.conversation):
            q = render_marks(t["question"], by_id, objects)
            a = render_marks(t["answer"], by_id, objects)
            turns += [Turn("user", f"{IMAGE_TOKEN}\n{q}" if k == 0 else q), Turn("assistant", a)]
        return [self._sample(facts, "grounded_conv", 0, turns, objects, rounds=len(facts.conversation))]

    def grounded_desc(self, facts: ImageFacts, n: int, rng: random.Random, report: FilterReport) -> list[Sample]:
        if not facts.description or n < 1:
            return []
        objects: list[ObjectRef] = []
        text = render_marks(facts.description, facts.by_id(), objects)
        turns = _ask(self._question("grounded_desc", rng), text)
        return [self._sample(facts, "grounded_desc", 0, turns, objects)]


def stage_of(sample: Sample) -> int:
    return int(STAGE[sample.task])

