"""A chat backend for any OpenAI-compatible ``/chat/completions`` endpoint.

One keep-alive connection pool, with at most ``concurrency`` calls in flight (a semaphore, released
while a call waits to retry, so backoff never holds a slot). Transient failures (429, 5xx, timeouts,
dropped connections) are retried with exponential backoff and jitter, honouring Retry-After; a bad
key or an unknown model stops the run instead of quarantining every record, and so does an
endpoint that cannot be reached at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any

import aiohttp

from tg_synth.backends.base import BackendError, ChatReply, ChatRequest, FatalBackendError, Usage
from tg_synth.backends.retry import RetryPolicy, is_retryable_status, parse_retry_after
from tg_synth.config import ChatConfig, ConfigError

KEY_HEADER = "X-TG-Synth-Key"


def _snippet(body: bytes, n: int = 200) -> str:
    return body[:n].decode("utf-8", errors="replace").replace("\n", " ")


class OpenAIChat:
    """``ChatBackend`` over HTTP; use it inside one event loop and ``aclose`` it there."""

    def __init__(self, cfg: ChatConfig, seed: int = 0) -> None:
        if not cfg.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url {cfg.base_url!r} must start with http:// or https://")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.name = f"openai:{cfg.model}:temperature={cfg.temperature}:max_tokens={cfg.max_tokens}:json={cfg.json_mode}"
        self.policy = RetryPolicy(cfg.max_attempts, cfg.backoff_base_s, cfg.backoff_max_s)
        self._rng = random.Random(seed)
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(cfg.concurrency)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            n = self.cfg.concurrency
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=n, limit_per_host=n, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s),
            )
        return self._session

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

    async def _post(self, content: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        async with self._slots, self._open().post(self.url, data=content, headers=headers) as resp:
            return resp.status, {"retry-after": resp.headers.get("Retry-After", "")}, await resp.read()

    async def complete(self, request: ChatRequest) -> ChatReply:
        content = self._body(request)
        headers = {**self._headers, KEY_HEADER: request.key}
        usage = Usage()
        reached = False
        last = "no attempt made"
        for attempt in range(self.policy.max_attempts):
            retry_after: float | None = None
            usage.calls += 1
            try:
                status, resp_headers, body = await self._post(content, headers)
            except TimeoutError:
                reached = True
                last = f"timed out after {self.cfg.timeout_s:g} s"
            except aiohttp.ClientConnectorError as e:
                last = f"connection failed ({e.strerror or type(e).__name__})"
            except aiohttp.ClientError as e:  # dropped connection, broken payload
                reached = True
                last = f"connection lost ({type(e).__name__}: {e})"
            else:
                reached = True
                if status == 200:
                    try:
                        return self._reply(body, usage)
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        last = f"malformed response envelope ({e})"
                elif status in (401, 403):
                    raise FatalBackendError(
                        f"{self.url}: HTTP {status} ({_snippet(body)}); check the key in ${self.cfg.api_key_env}"
                    )
                elif status == 404:
                    raise FatalBackendError(
                        f"{self.url}: HTTP 404 ({_snippet(body)}); check base_url and model {self.cfg.model!r}"
                    )
                elif is_retryable_status(status):
                    last = f"HTTP {status}"
                    retry_after = parse_retry_after(resp_headers.get("retry-after"))
                else:
                    raise BackendError(f"HTTP {status}: {_snippet(body)}", usage)
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
        if self._session is not None:
            await self._session.close()
            self._session = None
