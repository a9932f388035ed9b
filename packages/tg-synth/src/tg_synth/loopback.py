"""A loopback OpenAI-compatible chat endpoint that answers from the shapes world's truth.

It lets the real HTTP client, retries, parsing and caching run against a server on 127.0.0.1 with
nothing downloaded: it reads which step a request is from the prompt's system text, the step's
input from the prompt's JSON block, checks that an attached image is the scene's image, and answers
with the shapes oracle. It can add a fixed latency and inject faults (429, 500, timeouts, truncated
or non-JSON answers) at a chosen rate; the fault of a call depends only on (seed, record key,
attempt), so a run's faults do not depend on timing. Every call is logged.

Served with asyncio's streams (HTTP/1.1, keep-alive, Content-Length bodies): light enough that one
process serves hundreds of calls per second, as the throughput benchmark needs.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tg_data.shapes import load_scenes
from tg_data.shapes.dataset import image_path
from tg_synth.backends.oracle import ShapesOracle
from tg_synth.cache import stable_hash
from tg_synth.config import ChatConfig
from tg_synth.images import decode_data_url, sha256_bytes
from tg_synth.prompting import all_templates

FAULT_KINDS = ("429", "500", "timeout", "truncated", "non_json")
_JSON_BLOCK = re.compile(r"```json\s*\n(.*?)\n```", re.DOTALL)
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required", 429: "Too Many Requests",
                500: "Internal Server Error"}


@dataclass
class FaultPlan:
    """Which calls fail, and how: a ``rate`` share of calls, kinds drawn uniformly from ``kinds``."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    timeout_sleep_s: float = 5.0
    always: dict[str, str] = field(default_factory=dict)  # step -> fault kind for every call of that step

    def __post_init__(self) -> None:
        unknown = {k for k in [*self.kinds, *self.always.values()] if k not in FAULT_KINDS and not k.isdigit()}
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {list(FAULT_KINDS)}")

    def fault(self, step: str, key: str, attempt: int) -> str | None:
        if step in self.always:
            return self.always[step]
        if self.rate <= 0:
            return None
        h = int(stable_hash([self.seed, key, attempt])[:12], 16) / 16**12
        if h >= self.rate:
            return None
        return self.kinds[int(h / self.rate * len(self.kinds)) % len(self.kinds)]


class BadRequest(ValueError):
    pass


def _text_of(content: Any) -> tuple[str, list[str]]:
    """The text and the image URLs of one message's content."""
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for part in content or []:
        if part.get("type") == "text":
            texts.append(part.get("text", ""))
        elif part.get("type") == "image_url":
            images.append((part.get("image_url") or {}).get("url", ""))
    return "\n".join(texts), images


class OracleAnswerer:
    """Turns a chat-completions request into the shapes oracle's answer."""

    def __init__(self, shapes_root: str | Path, split: str, chat: ChatConfig | None = None, seed: int = 0) -> None:
        self.root = Path(shapes_root)
        scenes = load_scenes(str(self.root), split)
        self.scenes = {s.id: s for s in scenes}
        self.oracle = ShapesOracle(self.scenes, chat or ChatConfig(), seed)
        self.oracle.warm()
        self.steps_by_system = {t.system: t.step for t in all_templates().values() if t.system}
        self._image_sha: dict[str, str] = {}

    def expected_image_sha(self, image_id: str) -> str:
        if image_id not in self._image_sha:
            path = self.root / image_path(self.scenes[image_id])
            self._image_sha[image_id] = sha256_bytes(path.read_bytes())
        return self._image_sha[image_id]

    def parse(self, body: dict[str, Any]) -> tuple[str, dict[str, Any], list[str], bool]:
        """(step, inputs, image URLs, is_repair) of a request."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        system = next((m for m in messages if m.get("role") == "system"), None)
        if system is None:
            raise BadRequest("no system message: this endpoint only answers tg-synth prompts")
        step = self.steps_by_system.get(_text_of(system.get("content"))[0].strip())
        if step is None:
            raise BadRequest("the system message matches no tg-synth prompt template")
        users = [m for m in messages if m.get("role") == "user"]
        text, images = _text_of(users[0].get("content"))
        block = _JSON_BLOCK.search(text)
        if block is None:
            raise BadRequest("the user message has no ```json input block")
        try:
            inputs = json.loads(block.group(1))
        except json.JSONDecodeError as e:
            raise BadRequest(f"the input block is not JSON ({e.msg})") from None
        return step, inputs, images, len(users) > 1

    def answer(self, step: str, inputs: dict[str, Any], images: list[str]) -> str:
        image_id = str(inputs.get("image_id"))
        if image_id not in self.scenes:
            raise BadRequest(f"unknown image_id {image_id!r}")
        if step in ("recognize", "relate") and not images:
            raise BadRequest(f"step {step} needs the image attached")
        for url in images:
            try:
                data = decode_data_url(url)
            except ValueError as e:
                raise BadRequest(f"image is not a base64 data URL ({e})") from None
            if sha256_bytes(data) != self.expected_image_sha(image_id):
                raise BadRequest(f"the attached image is not the image of {image_id}")
        return json.dumps(self.oracle.answer(step, inputs), ensure_ascii=False)


class Answerer(Protocol):
    """What the endpoint asks of an answerer: read a request, then answer it."""

    def parse(self, body: dict[str, Any]) -> tuple[str, dict[str, Any], list[str], bool]: ...

    def answer(self, step: str, inputs: dict[str, Any], images: list[str]) -> str: ...


class ChatEndpoint:
    """The request handler: latency, faults, the answerer, and the call log."""

    def __init__(self, answerer: Answerer, latency_s: float = 0.0, faults: FaultPlan | None = None,
                 log_path: str | Path | None = None, model: str = "shapes-oracle") -> None:
        self.answerer = answerer
        self.latency_s = latency_s
        self.faults = faults or FaultPlan()
        self.model = model
        self.calls: list[dict[str, Any]] = []
        self.attempts: Counter[str] = Counter()
        self.active = 0
        self.max_active = 0  # most calls in flight at once
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115

    def _record(self, entry: dict[str, Any]) -> None:
        self.calls.append(entry)
        if self._log is not None:
            self._log.write(json.dumps(entry) + "\n")
            self._log.flush()

    async def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self._handle(body, headers)
        finally:
            self.active -= 1

    async def _handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        t0 = time.perf_counter()
        key = headers.get("x-tg-synth-key", "")
        try:
            request = json.loads(body)
            step, inputs, images, repair = self.answerer.parse(request)
        except (BadRequest, json.JSONDecodeError, AttributeError, TypeError) as e:
            self._record({"n": len(self.calls), "key": key, "step": None, "fault": None, "status": 400, "error": str(e)})
            return 400, {}, _error(str(e))
        attempt = self.attempts[key]
        self.attempts[key] += 1
        fault = self.faults.fault(step, key, attempt)
        entry = {"n": len(self.calls), "key": key, "step": step, "image_id": inputs.get("image_id"),
                 "attempt": attempt, "repair": repair, "fault": fault, "authorized": "authorization" in headers}
        if fault == "timeout":  # logged now: the client will have given up before the answer
            self._record({**entry, "status": "timeout"})
            await asyncio.sleep(self.faults.timeout_sleep_s)
            return 504, {}, _error("answered after the client's timeout")
        if self.latency_s > 0:
            await asyncio.sleep(max(0.0, self.latency_s - (time.perf_counter() - t0)))
        if fault is not None and fault.isdigit():  # "429", "500", or any status a test scripts
            status = int(fault)
            self._record({**entry, "status": status})
            extra = {"retry-after": "0"} if status == 429 else {}
            return status, extra, _error(f"injected HTTP {status}")
        try:
            content = self.answerer.answer(step, inputs, images)
        except BadRequest as e:
            self._record({**entry, "status": 400, "error": str(e)})
            return 400, {}, _error(str(e))
        if fault == "truncated":
            content = content[: max(1, len(content) // 2)]
        elif fault == "non_json":
            content = "Sure! Here is what I can see in the image: " + content.replace("{", "(").replace("}", ")")
        usage = {"prompt_tokens": len(body) // 4, "completion_tokens": len(content) // 4}  # about 4 bytes a token
        self._record({**entry, "status": 200, **usage})
        reply = {
            "id": f"chatcmpl-{len(self.calls)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model") or self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "length" if fault == "truncated" else "stop"}],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
        }
        return 200, {}, json.dumps(reply).encode()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


async def _serve_connection(endpoint: ChatEndpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = [*lines[0].split(" "), "", "", ""][:3]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if "content-length" not in headers and method == "POST":
                status, extra, body = 411, {}, _error("Content-Length required")
                data = b""
            else:
                data = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                path = target.split("?")[0].rstrip("/")
                if method == "POST" and path.endswith("/chat/completions"):
                    try:
                        status, extra, body = await endpoint.handle(data, headers)
                    except Exception as e:  # a server bug must look like a server error, not a hang
                        status, extra, body = 500, {}, _error(f"{type(e).__name__}: {e}")
                elif method == "GET" and path.endswith("/models"):
                    status, extra = 200, {}
                    body = json.dumps({"object": "list", "data": [{"id": endpoint.model, "object": "model"}]}).encode()
                else:
                    status, extra, body = 404, {}, _error(f"no route {method} {target}")
            head_out = [f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}", "content-type: application/json",
                        f"content-length: {len(body)}"] + [f"{k}: {v}" for k, v in extra.items()]
            writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


class LoopbackServer:
    """The endpoint on 127.0.0.1 in a background thread: ``with LoopbackServer(...) as s: s.base_url``."""

    def __init__(self, endpoint: ChatEndpoint, port: int = 0) -> None:
        self.endpoint = endpoint
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def serve(self, ready: threading.Event | None = None) -> None:
        self._stop = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await _serve_connection(self.endpoint, reader, writer)
            except asyncio.CancelledError:
                pass  # the server is stopping: end quietly (the connection is closed in finally)
            finally:
                connections.discard(task)

        server = await asyncio.start_server(on_connect, "127.0.0.1", self.port, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set()
        async with server:
            await self._stop.wait()
            for task in list(connections):  # calls still sleeping (latency, timeout faults) end now
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)

    def start(self) -> LoopbackServer:
        def main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self.serve(self._ready))
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=main, name="tg-synth-loopback", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the loopback server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self.endpoint.close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
