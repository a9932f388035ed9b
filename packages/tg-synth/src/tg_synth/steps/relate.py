"""Step 3, relation extraction: the MLLM states (subject, relation, object) triples over S1 (L2)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from tg_synth.backends.base import ChatBackend
from tg_synth.cache import Row
from tg_synth.executor import Executor
from tg_synth.images import ImageRef
from tg_synth.parsing import validate_relate
from tg_synth.prompting import PromptSet
from tg_synth.records import ImageItem, Instance
from tg_synth.steps.chat import chat_step


async def relate(
    ex: Executor,
    backend: ChatBackend,
    prompts: PromptSet,
    item: ImageItem,
    image: ImageRef,
    instances: Sequence[Instance],
    max_relations: int,
) -> Row:
    """Row value: ``{"relations": [{subject, relation, object}], "dropped": {reason: n}}``."""
    inputs = {"image_id": item.id, "objects": [i.prompt_view() for i in instances], "max_relations": max_relations}
    return await chat_step(
        ex, "relate", backend, prompts["relate"], prompts["repair"], inputs,
        partial(validate_relate, ids={i.id for i in instances}), image=image,
        values={"max_relations": max_relations},
    )
