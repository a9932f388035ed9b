"""Fixtures for tg-eval's tests: small files, a scripted judge server, a tiny shapes dataset."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl() -> Callable[[Path, list[dict[str, Any]]], Path]:
    return _write_jsonl


def chat_reply(content: str) -> dict[str, Any]:
    """A chat-completions response body carrying ``content``."""
    return {
        "id": "cmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }


class ScriptedJudge:
    """A real HTTP server on 127.0.0.1 answering POST /v1/chat/completions from a script.

    Each script entry is ``(status, body)``: a dict body is sent as JSON, a str body as raw text.
    Every request body and its headers are recorded.
    """

    def __init__(self) -> None:
        self.script: list[tuple[int, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with judge.lock:
                    judge.requests.append({"path": self.path, **body})
                    judge.headers.append(dict(self.headers))
                    status, reply = judge.script.pop(0) if judge.script else (500, "script exhausted")
                data = json.dumps(reply).encode() if isinstance(reply, dict) else str(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, content: str) -> None:
        self.script.append((200, chat_reply(content)))

    def fail(self, status: int, body: Any = "error") -> None:
        self.script.append((status, body))


@pytest.fixture
def judge_server() -> Iterator[ScriptedJudge]:
    judge = ScriptedJudge()
    judge.thread.start()
    try:
        yield judge
    finally:
        judge.server.shutdown()
        judge.server.server_close()


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tg_data.shapes import write_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(str(root), {"test": 6}, seed=3)
    return root
