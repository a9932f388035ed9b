"""The server, started for real on 127.0.0.1 and spoken to over HTTP."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

from tg_data.box import Box
from tg_data.schema import ObjectRef, Show
from tg_infer.predictor import Predictor
from tg_infer.requests import Request
from tg_infer.server import ServerSettings, create_app

MAX_TOKENS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


def ask(url: str, text: str, **extra) -> dict:
    return {"model": "tiny-served", "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": text}]}], **extra}


@dataclass
class Running:
    base: str
    allowed: Path
    outside: Path


@pytest.fixture(scope="module")
def server(predictor: Predictor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("serve")
    allowed, outside = root / "allowed", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    Image.new("RGB", (24, 16), (10, 200, 30)).save(allowed / "green.png")
    Image.new("RGB", (24, 16), (200, 10, 30)).save(outside / "secret.png")
    os.symlink(outside / "secret.png", allowed / "escape.png")
    settings = ServerSettings(allowed_dirs=(allowed,), max_request_bytes=200_000, max_image_pixels=250_000,
                              max_tokens=32, default_max_tokens=MAX_TOKENS, batch_wait_ms=50,
                              model_name="tiny-served")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(predictor, settings), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{port}", allowed, outside)
    finally:
        srv.should_exit = True
        thread.join(30)


def expected(predictor: Predictor, image: Image.Image, text: str, objects=(), max_tokens: int = MAX_TOKENS) -> str:
    return predictor.generate([Request.ask(text, image, objects, max_new_tokens=max_tokens)])[0].text


def test_models_and_health(server: Running) -> None:
    models = httpx.get(f"{server.base}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny-served"] and models["object"] == "list"
    health = httpx.get(f"{server.base}/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny-served"


def test_answers_match_the_predictor(server: Running, predictor: Predictor, make_image) -> None:
    image = make_image(40, 28, 11)
    r = httpx.post(f"{server.base}/v1/chat/completions", json=ask(data_url(png(image)), "Output the coordinate of x."),
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected(predictor, image, "Output the coordinate of x.")}
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["completion_tokens"] <= MAX_TOKENS
    assert body["object"] == "chat.completion" and body["model"] == "tiny-served"


def test_object_parts_and_file_paths(server: Running, predictor: Predictor) -> None:
    green = Image.open(server.allowed / "green.png").convert("RGB")
    content = [{"type": "image_url", "image_url": {"url": f"file://{server.allowed}/green.png"}},
               {"type": "text", "text": "What is "}, {"type": "object", "box": [2, 2, 12, 10]},
               {"type": "text", "text": "?"}]
    r = httpx.post(f"{server.base}/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": content}]}, timeout=60)
    assert r.status_code == 200, r.text
    box = Box.from_pixels(2, 2, 12, 10, 24, 16)
    assert r.json()["choices"][0]["message"]["content"] == expected(
        predictor, green, "What is <object>?", [ObjectRef(box, Show.IMAGE.value)])


def test_streaming_adds_up_to_the_plain_answer(server: Running, make_image) -> None:
    body = ask(data_url(png(make_image(30, 30, 4))), "Describe the image.", max_tokens=8)
    plain = httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=60).json()
    pieces, finish, usage = [], None, None
    with httpx.stream("POST", f"{server.base}/v1/chat/completions", timeout=60,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        chunk = json.loads(event)
        assert chunk["object"] == "chat.completion.chunk"
        if chunk.get("usage"):
            usage = chunk["usage"]
            continue
        choice = chunk["choices"][0]
        pieces.append(choice["delta"].get("content", ""))
        finish = choice["finish_reason"] or finish
    assert "".join(pieces) == plain["choices"][0]["message"]["content"]
    assert finish == plain["choices"][0]["finish_reason"]
    assert usage == plain["usage"]


def test_sixteen_concurrent_clients_are_batched_without_errors(server: Running, predictor: Predictor,
                                                               make_image) -> None:
    images = [make_image(20 + k, 30 - k, 100 + k) for k in range(16)]
    questions = [f"Output the coordinate of shape number {k}." for k in range(16)]
    before = httpx.get(f"{server.base}/health").json()

    def client(k: int) -> tuple[int, str]:
        r = httpx.post(f"{server.base}/v1/chat/completions", json=ask(data_url(png(images[k])), questions[k]),
                       timeout=120)
        return r.status_code, r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, range(16)))
    assert [status for status, _ in results] == [200] * 16
    answers = [text for _, text in results]
    assert answers == [expected(predictor, images[k], questions[k]) for k in range(16)]
    assert len(set(answers)) > 8  # answers depend on the input, so matching them means something
    after = httpx.get(f"{server.base}/health").json()
    assert after["requests"] - before["requests"] == 16
    assert after["batches"] - before["batches"] < 16  # requests that arrived together were decoded together
    assert after["largest_batch"] > 1


def test_every_malformed_request_gets_a_4xx_and_the_server_keeps_serving(server: Running, make_image) -> None:
    url = f"{server.base}/v1/chat/completions"
    good = ask(data_url(png(make_image(16, 16, 1))), "Hi")
    huge = Image.new("RGB", (600, 600))  # 360k pixels, over this server's 250k
    tiff = png(Image.new("RGB", (8, 8)), "TIFF")
    cases: list[tuple[str, dict | bytes, int, str]] = [
        ("not json", b"{not json", 400, "invalid_json"),
        ("json array", b"[1, 2]", 400, "invalid_request"),
        ("no messages", {"messages": []}, 400, "invalid_request"),
        ("bad role", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_request"),
        ("content missing", {"messages": [{"role": "user"}]}, 400, "invalid_request"),
        ("unknown part", {"messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]}, 400,
         "invalid_request"),
        ("placeholder typed", {"messages": [{"role": "user", "content": "<image> hi"}]}, 400, "invalid_request"),
        ("assistant last", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
         400, "invalid_request"),
        ("max tokens", {**good, "max_tokens": 10_000}, 400, "max_tokens_too_large"),
        ("max tokens zero", {**good, "max_tokens": 0}, 400, "invalid_request"),
        ("temperature", {**good, "temperature": -1}, 400, "invalid_request"),
        ("n", {**good, "n": 3}, 400, "invalid_request"),
        ("stop", {**good, "stop": ["\n"]}, 400, "invalid_request"),
        ("wrong model", {**good, "model": "gpt-4o"}, 404, "model_not_found"),
        ("remote url", ask("https://example.com/cat.png", "Hi"), 400, "remote_url_refused"),
        ("bad base64", ask("data:image/png;base64,!!!!", "Hi"), 400, "invalid_image"),
        ("not an image", ask(data_url(b"hello world"), "Hi"), 415, "unsupported_image_format"),
        ("tiff", ask(data_url(tiff, "image/tiff"), "Hi"), 415, "unsupported_image_format"),
        ("too many pixels", ask(data_url(png(huge)), "Hi"), 413, "image_too_large"),
        ("two images", {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(png(make_image(8, 8, 1)))}},
            {"type": "image_url", "image_url": {"url": data_url(png(make_image(8, 8, 2)))}}]}]}, 400, "invalid_request"),
        ("object without image", {"messages": [{"role": "user", "content": [{"type": "object", "box": [1, 1, 4, 4]}]}]},
         400, "invalid_request"),
        ("inverted object box", {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(png(make_image(8, 8, 1)))}},
            {"type": "object", "box": [6, 6, 2, 2]}]}]}, 400, "invalid_request"),
        ("outside path", ask(str(server.outside / "secret.png"), "Hi"), 403, "path_not_allowed"),
        ("traversal", ask(f"{server.allowed}/../outside/secret.png", "Hi"), 403, "path_not_allowed"),
        ("file url traversal", ask(f"file://{server.allowed}/%2e%2e/outside/secret.png", "Hi"), 403, "path_not_allowed"),
        ("symlink out", ask(str(server.allowed / "escape.png"), "Hi"), 403, "path_not_allowed"),
        ("relative path", ask("green.png", "Hi"), 403, "path_not_allowed"),
        ("missing file", ask(str(server.allowed / "nope.png"), "Hi"), 404, "image_not_found"),
        ("body too large", b"{" + b" " * 300_000 + b"}", 413, "request_too_large"),
        ("prompt too long", {"max_tokens": 4, "messages": [{"role": "user", "content": "word " * 600}]}, 400,
         "context_length_exceeded"),
    ]
    for name, body, status, code in cases:
        if isinstance(body, bytes):
            r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
        else:
            r = httpx.post(url, json=body, timeout=60)
        assert r.status_code == status, (name, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == code and error["message"], (name, error)
        assert "Traceback" not in error["message"]
    assert httpx.get(f"{server.base}/v1/nothing-here").status_code == 404
    assert httpx.get(url).status_code == 405
    # Still serving.
    r = httpx.post(url, json=good, timeout=60)
    assert r.status_code == 200 and httpx.get(f"{server.base}/health").json()["status"] == "ok"


def test_chunked_body_over_the_limit_is_refused(server: Running) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"messages": ['
        for _ in range(50):
            yield b" " * 10_000
        yield b"]}"

    r = httpx.post(f"{server.base}/v1/chat/completions", content=body(), timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
