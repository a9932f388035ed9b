"""Step 4, QA generation: the text LLM writes what templates cannot, over L1, S1 and L2.

Three task-specific prompts: referring expressions (for REC, REG and text-to-object-image QAs),
multi-round grounding conversations and grounding descriptions. Their answers mark object
mentions with ``{id}``; ``tg_synth.qa`` turns the marks into coordinates and builds the samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from tg_synth.backends.base import ChatBackend
from tg_synth.cache import Row
from tg_synth.executor import Executor
from tg_synth.parsing import validate_converse, validate_describe, validate_refer
from tg_synth.prompting import PromptSet
from tg_synth.records import ImageItem, Instance, Triple
from tg_synth.steps.chat import chat_step


def _context(item: ImageItem, instances: Sequence[Instance], relations: Sequence[Triple]) -> dict[str, Any]:
    return {
        "image_id": item.id,
        "objects": [i.prompt_view() for i in instances],
        "relations": [t.to_dict() for t in relations],
    }


async def refer(
    ex: Executor, backend: ChatBackend, prompts: PromptSet, item: ImageItem,
    instances: Sequence[Instance], relations: Sequence[Triple],
) -> Row:
    """Row value: ``{"expressions": {id: expression}, "dropped": {reason: n}}``."""
    return await chat_step(
        ex, "refer", backend, prompts["refer"], prompts["repair"], _context(item, instances, relations),
        partial(validate_refer, ids={i.id for i in instances}),
    )


async def converse(
    ex: Executor, backend: ChatBackend, prompts: PromptSet, item: ImageItem,
    instances: Sequence[Instance], relations: Sequence[Triple], rounds: int,
) -> Row:
    """Row value: ``{"turns": [{question, answer}]}`` with ``{id}`` marks."""
    inputs = {**_context(item, instances, relations), "rounds": rounds}
    return await chat_step(
        ex, "converse", backend, prompts["converse"], prompts["repair"], inputs,
        partial(validate_converse, ids={i.id for i in instances}, max_rounds=rounds), values={"rounds": rounds},
    )


async def describe(
    ex: Executor, backend: ChatBackend, prompts: PromptSet, item: ImageItem,
    instances: Sequence[Instance], relations: Sequence[Triple],
) -> Row:
    """Row value: ``{"description": text}`` with ``{id}`` marks."""
    return await chat_step(
        ex, "describe", backend, prompts["describe"], prompts["repair"], _context(item, instances, relations),
        partial(validate_describe, ids={i.id for i in instances}),
    )
