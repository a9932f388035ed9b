"""The OpenAI-compatible client against a real HTTP endpoint on 127.0.0.1 with scripted faults."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from tg_data.shapes import load_scenes
from tg_data.shapes.dataset import image_path
from tg_synth.backends.base import BackendError, ChatRequest, FatalBackendError
from tg_synth.backends.openai_chat import OpenAIChat
from tg_synth.config import ChatConfig
from tg_synth.images import ImageRef
from tg_synth.prompting import get_template


class Script:
    """Faults by attempt number, the same for every record."""

    def __init__(self, *faults: str | None, timeout_sleep_s: float = 1.0) -> None:
        self.faults = faults
        self.timeout_sleep_s = timeout_sleep_s

    def fault(self, step: str, key: str, attempt: int) -> str | None:
        return self.faults[attempt] if attempt < len(self.faults) else None


def _request(shapes_root: Path, key: str = "k-0", k: int = 0) -> ChatRequest:
    scene = load_scenes(str(shapes_root), "train")[k]
    image = ImageRef.open(str(shapes_root / image_path(scene)))
    inputs = {"image_id": scene.id, "max_objects": 10}
    messages = get_template("recognize").messages(inputs, image.data_url(), max_objects=10)
    return ChatRequest("recognize", messages, key, inputs)


def _client(url: str, **kw) -> OpenAIChat:
    fields = {"kind": "openai", "base_url": url, "model": "m", "api_key_env": "", "backoff_base_s": 0.001,
              "backoff_max_s": 0.01, **kw}
    return OpenAIChat(ChatConfig(**fields))


async def _complete(url: str, request: ChatRequest, **kw):
    client = _client(url, **kw)
    try:
        return await client.complete(request)
    finally:
        await client.aclose()


def test_429_and_500_are_retried_until_an_answer_comes(loopback, shapes_root: Path) -> None:
    server = loopback(faults=Script("429", "500"))
    reply = asyncio.run(_complete(server.base_url, _request(shapes_root)))
    assert "objects" in json.loads(reply.content)
    assert reply.usage.calls == 3 and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert [c["status"] for c in server.endpoint.calls] == [429, 500, 200]
    assert {c["key"] for c in server.endpoint.calls} == {"k-0"}


def test_a_timeout_is_retried(loopback, shapes_root: Path) -> None:
    server = loopback(faults=Script("timeout", timeout_sleep_s=1.0))
    reply = asyncio.run(_complete(server.base_url, _request(shapes_root), timeout_s=0.2))
    assert reply.usage.calls == 2 and "objects" in json.loads(reply.content)


def test_spent_retries_raise_a_backend_error_with_the_reason(loopback, shapes_root: Path) -> None:
    server = loopback(faults=Script("500", "500", "500", "500"))
    with pytest.raises(BackendError, match="HTTP 500 after 3 attempts") as e:
        asyncio.run(_complete(server.base_url, _request(shapes_root), max_attempts=3))
    assert e.value.usage.calls == 3 and len(server.endpoint.calls) == 3


def test_a_client_error_is_not_retried(loopback, shapes_root: Path) -> None:
    server = loopback(faults=Script("400"))
    with pytest.raises(BackendError, match="HTTP 400"):
        asyncio.run(_complete(server.base_url, _request(shapes_root)))
    assert len(server.endpoint.calls) == 1


@pytest.mark.parametrize(("status", "hint"), [("401", "check the key in"), ("404", "check base_url and model")])
def test_auth_and_missing_model_stop_the_run(loopback, shapes_root: Path, status: str, hint: str) -> None:
    server = loopback(faults=Script(status))
    with pytest.raises(FatalBackendError, match=hint):
        asyncio.run(_complete(server.base_url, _request(shapes_root)))
    assert len(server.endpoint.calls) == 1


def test_an_unreachable_endpoint_stops_the_run(shapes_root: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the client connects: refused
    with pytest.raises(FatalBackendError, match="cannot reach"):
        asyncio.run(_complete(f"http://127.0.0.1:{port}/v1", _request(shapes_root), max_attempts=2))


def test_concurrency_is_bounded(loopback, shapes_root: Path) -> None:
    server = loopback(latency_s=0.05)

    async def main() -> None:
        client = _client(server.base_url, concurrency=3)
        try:
            await asyncio.gather(*(client.complete(_request(shapes_root, f"k-{i}", i % 4)) for i in range(12)))
        finally:
            await client.aclose()

    asyncio.run(main())
    assert len(server.endpoint.calls) == 12
    assert server.endpoint.max_active == 3


def test_the_key_from_the_environment_is_sent(loopback, shapes_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = loopback()
    monkeypatch.setenv("TG_SYNTH_TEST_KEY", "sk-test")
    asyncio.run(_complete(server.base_url, _request(shapes_root), api_key_env="TG_SYNTH_TEST_KEY"))
    monkeypatch.delenv("TG_SYNTH_TEST_KEY")
    asyncio.run(_complete(server.base_url, _request(shapes_root, "k-1"), api_key_env="TG_SYNTH_TEST_KEY"))
    assert [c["authorized"] for c in server.endpoint.calls] == [True, False]


def test_the_endpoint_refuses_an_image_that_is_not_the_scenes(loopback, shapes_root: Path) -> None:
    server = loopback()
    request = _request(shapes_root)
    other = _request(shapes_root, k=1)
    request.messages[1]["content"][1] = other.messages[1]["content"][1]  # scene 1's image for scene 0
    with pytest.raises(BackendError, match=r"HTTP 400.*is not the image of"):
        asyncio.run(_complete(server.base_url, request))
