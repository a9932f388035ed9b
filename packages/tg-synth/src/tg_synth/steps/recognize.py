"""Step 1, object recognition: the MLLM lists the objects it sees in the image (L1)."""

from __future__ import annotations

from functools import partial

from tg_synth.backends.base import ChatBackend
from tg_synth.cache import Row
from tg_synth.executor import Executor
from tg_synth.images import ImageRef
from tg_synth.parsing import validate_recognize
from tg_synth.prompting import PromptSet
from tg_synth.records import ImageItem
from tg_synth.steps.chat import chat_step


async def recognize(
    ex: Executor, backend: ChatBackend, prompts: PromptSet, item: ImageItem, image: ImageRef, max_objects: int
) -> Row:
    """Row value: ``{"objects": [names], "dropped": {reason: n}}``."""
    inputs = {"image_id": item.id, "max_objects": max_objects}
    return await chat_step(
        ex, "recognize", backend, prompts["recognize"], prompts["repair"], inputs,
        partial(validate_recognize, max_objects=max_objects), image=image, values={"max_objects": max_objects},
    )
