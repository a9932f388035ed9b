"""One chat step: render the prompt, call the backend, parse strictly, repair once, else quarantine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tg_synth.backends.base import BackendError, ChatBackend, ChatRequest, Usage
from tg_synth.cache import DONE, QUARANTINED, Row
from tg_synth.executor import Executor
from tg_synth.images import ImageRef
from tg_synth.parsing import OutputError, parse_json_object
from tg_synth.prompting import PromptTemplate

Validator = Callable[[dict[str, Any]], dict[str, Any]]


def _row(key: str, step: str, status: str, usage: Usage, cost: float, t0: float, **kw: Any) -> Row:
    return Row(
        key, step, status, calls=usage.calls, prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens, cost=cost, seconds=time.perf_counter() - t0, **kw,
    )


async def chat_step(
    ex: Executor,
    step: str,
    backend: ChatBackend,
    template: PromptTemplate,
    repair: PromptTemplate,
    inputs: dict[str, Any],
    validate: Validator,
    image: ImageRef | None = None,
    values: dict[str, Any] | None = None,
) -> Row:
    """The step's cached row: ``done`` with the validated value, or ``quarantined`` with the reason."""
    values = values or {}
    key_inputs = {"inputs": inputs, "values": values, "image": image.sha256 if image else None}

    async def compute(key: str) -> Row:
        t0 = time.perf_counter()
        messages = template.messages(inputs, image.data_url() if image else None, **values)
        usage = Usage()
        try:
            reply = await backend.complete(ChatRequest(step, messages, key, inputs))
        except BackendError as e:
            usage.add(e.usage)
            return _row(key, step, QUARANTINED, usage, backend.cost(usage), t0, reason=f"backend: {e.reason}")
        usage.add(reply.usage)
        try:
            value = validate(parse_json_object(reply.content))
            return _row(key, step, DONE, usage, backend.cost(usage), t0, value=value)
        except OutputError as first:
            problem = str(first)
        fix = [
            {"role": "assistant", "content": reply.content},
            {"role": "user", "content": repair.render_user(error=problem)},
        ]
        try:
            again = await backend.complete(ChatRequest(step, messages + fix, key, inputs, repair=True))
        except BackendError as e:
            usage.add(e.usage)
            return _row(key, step, QUARANTINED, usage, backend.cost(usage), t0,
                        reason=f"invalid answer ({problem}); the repair call failed: {e.reason}", raw=reply.content)
        usage.add(again.usage)
        try:
            value = validate(parse_json_object(again.content))
            return _row(key, step, DONE, usage, backend.cost(usage), t0, value=value)
        except OutputError as second:
            return _row(key, step, QUARANTINED, usage, backend.cost(usage), t0,
                        reason=f"invalid answer after one repair: {second} (first answer: {problem})",
                        raw=again.content)

    return await ex.cached(step, key_inputs, f"{template.id}+{repair.id}", backend.name, compute)
