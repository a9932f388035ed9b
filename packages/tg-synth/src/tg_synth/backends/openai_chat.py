"""A chat backend for any OpenAI-compatible ``/chat/completions`` endpoint.

Concurrency is bounded by lanes: ``concurrency`` connection pools of one keep-alive connection each,
handed out through a queue. This keeps connection bookkeeping constant per request (one shared pool
scans all its connections on every request), so one process reaches the endpoint's limit.
Transient failures (429, 5xx, timeouts, dropped connections) are retried with backoff and jitter;
a bad key or unknown model stops the run instead of quarantining every record.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
from typing import Any

import httpcore

from tg_synth.backends.base import BackendError, ChatReply, ChatRequest, FatalBackendError, Usage
from tg_synth.backends.retry import RetryPolicy, is_retryable_status, parse_retry_after
from tg_synth.config import ChatConfig, ConfigError

KEY_HEADER = b"x-tg-synth-key"


def _snippet(body: bytes, n: int = 200) -> str:
    return body[:n].decode("utf-8", errors="replace").replace("\n", " ")


class OpenAIChat:
    """``ChatBackend`` over HTTP; create it inside the event loop that will use it."""

    def __init__(self, cfg: ChatConfig, seed: int = 0) -> None:
        if not cfg.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url {cfg.base_url!r} must start with http:// or https://")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.name = f"openai:{cfg.model}:temperature={cfg.temperature}:max_tokens={cfg.max_tokens}:json={cfg.json_mode}"
        self.policy = RetryPolicy(cfg.max_attempts, cfg.backoff_base_s, cfg.backoff_max_s)
        self._rng = random.Random(seed)
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self._headers = [(b"content-type", b"application/json"), (b"accept", b"application/json")]
        if key:
            self._headers.append((b"authorization", f"Bearer {key}".encode()))
        t = cfg.timeout_s
        self._timeouts = {"connect": t, "read": t, "write": t, "pool": t}
        ctx = ssl.create_default_context() if self.url.startswith("https://") else None
        self._pools = [
            httpcore.AsyncConnectionPool(max_connections=1, max_keepalive_connections=1, ssl_context=ctx)
            for _ in range(cfg.concurrency)
        ]
        self._lanes: asyncio.Queue[httpcore.AsyncConnectionPool] = asyncio.Queue()
        for pool in self._pools:
            self._lanes.put_nowait(pool)

    def cost(self, usage: Usage) -> float:
        return (
            usage.prompt_tokens / 1000 * self.cfg.cost_per_1k_prompt
            + usage.completion_tokens / 1000 * self.cfg.cost_per_1k_completion
        )

    def _body(self, request: ChatRequest) -> bytes:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": request.messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        if self.cfg.json_mode:
            body["response_format"] = {"type": "json_object"}
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    async def _post(self, content: bytes, headers: list[tuple[bytes, bytes]]) -> httpcore.Response:
        pool = await self._lanes.get()
        try:
            return await pool.request(
                "POST", self.url, headers=headers, content=content, extensions={"timeout": self._timeouts}
            )
        finally:
            self._lanes.put_nowait(pool)

    async def complete(self, request: ChatRequest) -> ChatReply:
        content = self._body(request)
        headers = [*self._headers, (KEY_HEADER, request.key.encode())]
        usage = Usage()
        reached = False
        last = "no attempt made"
        for attempt in range(self.policy.max_attempts):
            retry_after: float | None = None
            usage.calls += 1
            try:
                resp = await self._post(content, headers)
            except httpcore.TimeoutException:
                reached = True
                last = f"timed out after {self.cfg.timeout_s:g} s"
            except (httpcore.NetworkError, httpcore.ProtocolError) as e:
                last = f"connection failed ({type(e).__name__}: {e})"
            else:
                reached = True
                status = resp.status
                if status == 200:
                    try:
                        return self._reply(resp.content, usage)
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        last = f"malformed response envelope ({e})"
                elif status in (401, 403):
                    raise FatalBackendError(
                        f"{self.url}: HTTP {status} ({_snippet(resp.content)}); check the key in "
                        f"${self.cfg.api_key_env}"
                    )
                elif status == 404:
                    raise FatalBackendError(
                        f"{self.url}: HTTP 404 ({_snippet(resp.content)}); check base_url and model {self.cfg.model!r}"
                    )
                elif is_retryable_status(status):
                    last = f"HTTP {status}"
                    retry_after = parse_retry_after(
                        next((v.decode() for k, v in resp.headers if k.lower() == b"retry-after"), None)
                    )
                else:
                    raise BackendError(f"HTTP {status}: {_snippet(resp.content)}", usage)
            if attempt + 1 < self.policy.max_attempts:
                await asyncio.sleep(self.policy.delay(attempt, self._rng, retry_after))
        if not reached:
            raise FatalBackendError(
                f"cannot reach {self.url} after {self.policy.max_attempts} attempts: {last}; "
                "start the endpoint (or fix base_url) and run again: finished records are kept"
            )
        raise BackendError(f"{last} after {self.policy.max_attempts} attempts", usage)

    def _reply(self, body: bytes, usage: Usage) -> ChatReply:
        data = json.loads(body)
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        if not isinstance(text, str):  # content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        u = data.get("usage") or {}
        usage.prompt_tokens += int(u.get("prompt_tokens") or 0)
        usage.completion_tokens += int(u.get("completion_tokens") or 0)
        return ChatReply(text, usage, str(choice.get("finish_reason") or "stop"))

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()
