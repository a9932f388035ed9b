"""From a scene to training samples of every task type the paper trains on.

Stage 1: brief captions. Stage 2: REC, REG, object image -> coordinates, coordinates -> object
image (choice), expression -> object image (choice), relation questions with object images.
Stage 3: multi-round grounded conversations and grounded detailed descriptions.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tg_data.coords import render_box
from tg_data.prompts import REC_PROMPT
from tg_data.schema import IMAGE_TOKEN, OBJECT_TOKEN, ObjectRef, Sample, Show, Task, Turn
from tg_data.shapes.language import choose_expression, name_with_article, position_words
from tg_data.shapes.scene import Scene, ShapesConfig, relation_holds, relations

CAPTION_PROMPTS = (
    "Describe the image briefly.",
    "Give a short caption of the image.",
    "What does the image show? Answer in one sentence.",
)
REG_PROMPTS = (
    "What is the object at {coord}?",
    "Name the object in the region {coord}.",
)
OBJ2COORD_PROMPTS = (
    "Where is the object {obj} in the image? Output its coordinate.",
    "Find {obj} in the image and give its coordinate.",
)
DESC_PROMPT = "Describe the image in detail. Give the coordinate of every object you mention."

STAGE_OF_TASK: dict[str, int] = {
    Task.CAPTION: 1,
    Task.REC: 2,
    Task.REG: 2,
    Task.OBJ2COORD: 2,
    Task.COORD2OBJ: 2,
    Task.TEXT2OBJ: 2,
    Task.RELATION: 2,
    Task.GROUNDED_CONV: 3,
    Task.GROUNDED_DESC: 3,
    Task.VQA: 3,
}


@dataclass(frozen=True)
class TaskMix:
    """How many samples of each task one scene yields (at most: small scenes yield fewer)."""

    counts: dict[str, int] = field(
        default_factory=lambda: {
            Task.CAPTION: 1,
            Task.REC: 3,
            Task.REG: 1,
            Task.OBJ2COORD: 1,
            Task.COORD2OBJ: 1,
            Task.TEXT2OBJ: 1,
            Task.RELATION: 1,
            Task.GROUNDED_CONV: 1,
            Task.GROUNDED_DESC: 1,
        }
    )

    # REC samples ask about up to this many objects of the scene, one round each: the image is
    # read once for several answers (training throughput); 1 gives the benchmark's single question
    rec_rounds: int = 1

    def __post_init__(self) -> None:
        if self.rec_rounds < 1:
            raise ValueError(f"rec_rounds must be >= 1, got {self.rec_rounds}")
        unknown = set(self.counts) - set(EMITTERS)
        if unknown:
            raise ValueError(f"unknown shapes tasks {sorted(unknown)}; known: {sorted(EMITTERS)}")


@dataclass
class _Ctx:
    scene: Scene
    image: str
    rng: np.random.Generator
    config: ShapesConfig
    rec_rounds: int = 1

    def sample(self, task: str, n: int, turns: list[Turn], objects: list[ObjectRef], **meta: object) -> Sample:
        return Sample(
            id=f"{self.scene.id}-{task}-{n}",
            image=self.image,
            width=self.scene.width,
            height=self.scene.height,
            task=str(task),
            source="shapes",
            objects=objects,
            turns=turns,
            meta={"scene": self.scene.id, "stage": STAGE_OF_TASK.get(task, 0), **meta},
        )

    def coord(self, i: int) -> str:
        return render_box(self.scene.box(i))

    def pick(self, seq: tuple[str, ...]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def order(self, n: int) -> list[int]:
        return [int(i) for i in self.rng.permutation(n)]


def _ask(question: str, answer: str) -> list[Turn]:
    return [Turn("user", f"{IMAGE_TOKEN}\n{question}"), Turn("assistant", answer)]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _list_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption(ctx: _Ctx, n: int) -> list[Sample]:
    sc = ctx.scene
    order = sorted(range(len(sc.shapes)), key=lambda i: sc.shapes[i].px[0])
    names = [name_with_article(sc, i, with_size=bool(ctx.rng.random() < 0.5)) for i in order]
    bg = ("textured " if sc.textured else "") + sc.background
    text = f"{_plural(len(order), 'shape').capitalize()} on a {bg} background: {_list_words(names)}."
    return [ctx.sample(Task.CAPTION, k, _ask(ctx.pick(CAPTION_PROMPTS), text), []) for k in range(min(n, 1))]


def rec(ctx: _Ctx, n: int) -> list[Sample]:
    """Expression -> coordinates; with ``rec_rounds > 1`` several objects, one round each."""
    if ctx.rec_rounds > 1:
        return [_rec_rounds(ctx, k) for k in range(n)]
    out = []
    for k, i in enumerate(ctx.order(len(ctx.scene.shapes))[:n]):
        expr = choose_expression(ctx.scene, i, ctx.rng, ctx.config)
        obj = ObjectRef(ctx.scene.box(i), Show.COORD.value, label=expr.text())
        turns = _ask(REC_PROMPT.format(expression=expr.text()), ctx.coord(i))
        out.append(ctx.sample(Task.REC, k, turns, [obj], target=i, expression=expr.to_dict()))
    return out


def _rec_rounds(ctx: _Ctx, k: int) -> Sample:
    targets = ctx.order(len(ctx.scene.shapes))[: ctx.rec_rounds]
    exprs = [choose_expression(ctx.scene, i, ctx.rng, ctx.config) for i in targets]
    turns: list[Turn] = []
    for r, (i, expr) in enumerate(zip(targets, exprs, strict=True)):
        question = REC_PROMPT.format(expression=expr.text())
        turns += [Turn("user", f"{IMAGE_TOKEN}\n{question}" if r == 0 else question), Turn("assistant", ctx.coord(i))]
    objects = [ObjectRef(ctx.scene.box(i), Show.COORD.value, label=e.text()) for i, e in zip(targets, exprs, strict=True)]
    return ctx.sample(
        Task.REC, k, turns, objects, target=targets, expression=[e.to_dict() for e in exprs], rounds=len(targets)
    )


def reg(ctx: _Ctx, n: int) -> list[Sample]:
    out = []
    for k, i in enumerate(ctx.order(len(ctx.scene.shapes))[:n]):
        expr = choose_expression(ctx.scene, i, ctx.rng, ctx.config)
        obj = ObjectRef(ctx.scene.box(i), Show.COORD.value, label=expr.text())
        turns = _ask(ctx.pick(REG_PROMPTS).format(coord=ctx.coord(i)), expr.text().capitalize() + ".")
        out.append(ctx.sample(Task.REG, k, turns, [obj], target=i, expression=expr.to_dict()))
    return out


def obj2coord(ctx: _Ctx, n: int) -> list[Sample]:
    out = []
    for k, i in enumerate(ctx.order(len(ctx.scene.shapes))[:n]):
        obj = ObjectRef(ctx.scene.box(i), Show.IMAGE.value, label=ctx.scene.shapes[i].name)
        turns = _ask(ctx.pick(OBJ2COORD_PROMPTS).format(obj=OBJECT_TOKEN), ctx.coord(i))
        out.append(ctx.sample(Task.OBJ2COORD, k, turns, [obj], target=i))
    return out


def _options(ctx: _Ctx, target: int, pool: list[int], max_options: int = 4) -> tuple[list[int], int]:
    """Option shapes (target plus distractors, shuffled) and the index of the right one."""
    distractors = [j for j in pool if j != target]
    ctx.rng.shuffle(distractors)
    opts = [target, *distractors[: max_options - 1]]
    ctx.rng.shuffle(opts)
    return [int(o) for o in opts], opts.index(target)


def _option_text(opts: list[int]) -> str:
    return " ".join(f"{string.ascii_uppercase[k]}. {OBJECT_TOKEN}" for k in range(len(opts)))


def _choice(ctx: _Ctx, n: int, task: str, question: Callable[[int], str]) -> list[Sample]:
    sc = ctx.scene
    if len(sc.shapes) < 2:
        return []
    out = []
    for k, i in enumerate(ctx.order(len(sc.shapes))[:n]):
        opts, right = _options(ctx, i, list(range(len(sc.shapes))))
        objects = [ObjectRef(sc.box(j), Show.IMAGE.value, label=sc.shapes[j].name) for j in opts]
        turns = _ask(f"{question(i)} Options: {_option_text(opts)}", string.ascii_uppercase[right])
        out.append(ctx.sample(task, k, turns, objects, target=i, answer=string.ascii_uppercase[right]))
    return out


def coord2obj(ctx: _Ctx, n: int) -> list[Sample]:
    return _choice(ctx, n, Task.COORD2OBJ, lambda i: f"Which object image shows the object at {ctx.coord(i)}?")


def text2obj(ctx: _Ctx, n: int) -> list[Sample]:
    def question(i: int) -> str:
        return f"Which object image shows {choose_expression(ctx.scene, i, ctx.rng, ctx.config).text()}?"

    return _choice(ctx, n, Task.TEXT2OBJ, question)


def relation(ctx: _Ctx, n: int) -> list[Sample]:
    """Yes/no relation questions where both objects are shown as object images."""
    sc = ctx.scene
    if len(sc.shapes) < 2:
        return []
    out = []
    for k in range(n):
        i, j = (int(x) for x in ctx.rng.choice(len(sc.shapes), size=2, replace=False))
        rel = ctx.pick(("left of", "right of", "above", "below", "bigger than"))
        holds = relation_holds(sc, rel, i, j, ctx.config)
        objects = [ObjectRef(sc.box(x), Show.IMAGE.value, label=sc.shapes[x].name) for x in (i, j)]
        question = f"Is the object {OBJECT_TOKEN} {rel} the object {OBJECT_TOKEN}? Answer yes or no."
        out.append(ctx.sample(Task.RELATION, k, _ask(question, "Yes" if holds else "No"), objects, relation=rel))
    return out


def _mention(ctx: _Ctx, i: int, objects: list[ObjectRef], indefinite: bool = False) -> str:
    """An object named with its coordinate, recorded as a coordinate-shown object."""
    sc = ctx.scene
    objects.append(ObjectRef(sc.box(i), Show.COORD.value, label=sc.shapes[i].name))
    name = name_with_article(sc, i) if indefinite else f"the {sc.shapes[i].name}"
    return f"{name} {ctx.coord(i)}"


def grounded_conv(ctx: _Ctx, n: int) -> list[Sample]:
    sc = ctx.scene
    out = []
    for k in range(n):
        objects: list[ObjectRef] = []
        turns: list[Turn] = []
        order = sorted(range(len(sc.shapes)), key=lambda i: sc.shapes[i].px[0])
        mentions = [_mention(ctx, i, objects, indefinite=True) for i in order]
        turns += _ask("What shapes are in the image?", f"There {'is' if len(order) == 1 else 'are'} "
                      f"{_plural(len(order), 'shape')}: {_list_words(mentions)}.")
        rounds = ["where", "count", "colour", "relation"]
        ctx.rng.shuffle(rounds)
        for kind in rounds[: int(ctx.rng.integers(1, 4))]:
            i = int(ctx.rng.integers(len(sc.shapes)))
            if kind == "where":
                expr = choose_expression(sc, i, ctx.rng, ctx.config)
                q, a = f"Where is {expr.text()}?", f"{expr.text().capitalize()} is at {ctx.coord(i)}."
                objects.append(ObjectRef(sc.box(i), Show.COORD.value, label=expr.text()))
            elif kind == "count":
                shape_kind = sc.shapes[i].kind
                idx = [j for j, s in enumerate(sc.shapes) if s.kind == shape_kind]
                q = f"How many {shape_kind}s are there?"
                a = f"There {'is' if len(idx) == 1 else 'are'} {_plural(len(idx), shape_kind)}: " + _list_words(
                    [_mention(ctx, j, objects) for j in idx]
                ) + "."
            elif kind == "colour":
                q = f"What colour is the object at {ctx.coord(i)}?"
                a = f"It is {sc.shapes[i].colour}."
                objects.append(ObjectRef(sc.box(i), Show.COORD.value, label=sc.shapes[i].name))
            else:
                triples = [t for t in relations(sc, ctx.config) if t[1] != "next to"]
                if not triples:
                    continue
                _a_i, rel, b_i = triples[int(ctx.rng.integers(len(triples)))]
                others = [x for x in range(len(sc.shapes)) if relation_holds(sc, rel, x, b_i, ctx.config)]
                q = f"What is {rel} the {sc.shapes[b_i].name}?"
                a = _list_words([_mention(ctx, x, objects) for x in others]).capitalize() + "."
            turns += [Turn("user", q), Turn("assistant", a)]
        out.append(ctx.sample(Task.GROUNDED_CONV, k, turns, objects))
    return out


def grounded_desc(ctx: _Ctx, n: int) -> list[Sample]:
    sc = ctx.scene
    out = []
    for k in range(n):
        objects: list[ObjectRef] = []
        bg = ("textured " if sc.textured else "") + sc.background
        parts = [f"The image shows {_plural(len(sc.shapes), 'shape')} on a {bg} background."]
        order = sorted(range(len(sc.shapes)), key=lambda i: (sc.shapes[i].px[1], sc.shapes[i].px[0]))
        for i in order:
            s = sc.shapes[i]
            objects.append(ObjectRef(sc.box(i), Show.COORD.value, label=s.name))
            parts.append(f"A {s.size} {s.colour} {s.kind} {ctx.coord(i)} is {position_words(sc, i)}.")
        triples = [t for t in relations(sc, ctx.config) if t[1] in ("left of", "above", "bigger than")]
        for a_i, rel, b_i in triples[:3]:
            parts.append(f"The {sc.shapes[a_i].name} is {rel} the {sc.shapes[b_i].name}.")
        out.append(ctx.sample(Task.GROUNDED_DESC, k, _ask(DESC_PROMPT, " ".join(parts)), objects))
    return out


EMITTERS: dict[str, Callable[[_Ctx, int], list[Sample]]] = {
    Task.CAPTION: caption,
    Task.REC: rec,
    Task.REG: reg,
    Task.OBJ2COORD: obj2coord,
    Task.COORD2OBJ: coord2obj,
    Task.TEXT2OBJ: text2obj,
    Task.RELATION: relation,
    Task.GROUNDED_CONV: grounded_conv,
    Task.GROUNDED_DESC: grounded_desc,
}


def scene_samples(
    scene: Scene, image: str, rng: np.random.Generator, config: ShapesConfig, mix: TaskMix | None = None
) -> list[Sample]:
    """All samples one scene yields under ``mix``, in task order."""
    mix = mix or TaskMix()
    ctx = _Ctx(scene, image, rng, config, mix.rec_rounds)
    out: list[Sample] = []
    for task, count in mix.counts.items():
        if count > 0 and scene.shapes:
            out.extend(EMITTERS[task](ctx, count))
    return out
