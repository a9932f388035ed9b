"""Judges: an LLM behind any OpenAI-compatible chat-completions endpoint grades free-form answers.

The endpoint, model and key come from the environment (``TG_EVAL_JUDGE_BASE_URL``,
``TG_EVAL_JUDGE_MODEL``, ``TG_EVAL_JUDGE_API_KEY``; ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` as
fallbacks) so no secret is ever written into a command line or a result file. Replies are parsed
strictly; a malformed one is sent back once per retry with the parse error, and after the last
attempt the item is recorded as a failure, counted, and left out of the means. Verdicts are
appended to a review log as they come, so an interrupted judging run resumes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from tg_eval.errors import EvalError
from tg_eval.predictions import PredictionLog
from tg_eval.records import read_records, record_id

T = TypeVar("T")

ENV_BASE_URL = "TG_EVAL_JUDGE_BASE_URL"
ENV_MODEL = "TG_EVAL_JUDGE_MODEL"
ENV_API_KEY = "TG_EVAL_JUDGE_API_KEY"


class JudgeError(EvalError):
    """The judge cannot be used at all (configuration, authentication, unknown model)."""


class MalformedReply(ValueError):
    """A reply that does not follow the format the prompt asks for."""


class TransientJudgeError(RuntimeError):
    """The endpoint kept failing (timeouts, 429, 5xx) for one item."""


def load_prompt(name: str) -> str:
    """A prompt shipped in ``tg_eval/prompts/`` (``name`` without the ``.txt``)."""
    path = resources.files("tg_eval") / "prompts" / f"{name}.txt"
    if not path.is_file():
        raise EvalError(f"no judge prompt named {name!r} in tg_eval/prompts")
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class JudgeConfig:
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout_s: float = 120.0
    attempts: int = 3  # tries per item while replies are malformed
    http_retries: int = 3  # extra tries per request on timeouts, 429 and 5xx
    backoff_s: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> JudgeConfig:
        env = os.environ if env is None else env
        base_url = overrides.pop("base_url", None) or env.get(ENV_BASE_URL) or env.get("OPENAI_BASE_URL")
        model = overrides.pop("model", None) or env.get(ENV_MODEL)
        api_key = overrides.pop("api_key", None) or env.get(ENV_API_KEY) or env.get("OPENAI_API_KEY")
        if not base_url:
            raise JudgeError(
                f"no judge endpoint: set {ENV_BASE_URL} to an OpenAI-compatible base URL "
                "(e.g. https://api.openai.com/v1 or http://localhost:8000/v1)"
            )
        if not model:
            raise JudgeError(f"no judge model: set {ENV_MODEL} (e.g. gpt-4o-2024-08-06)")
        return cls(base_url=base_url, model=model, api_key=api_key, **overrides)


class ChatClient:
    """A minimal chat-completions client: one request, retried on transient failures."""

    def __init__(self, config: JudgeConfig, http: httpx.Client | None = None, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.http = http or httpx.Client(timeout=config.timeout_s)
        self.sleep = sleep
        self.url = config.base_url.rstrip("/") + "/chat/completions"

    def complete(self, messages: Sequence[Mapping[str, str]]) -> str:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        body = {
            "model": self.config.model,
            "messages": list(messages),
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        last = ""
        for attempt in range(self.config.http_retries + 1):
            if attempt:
                self.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.http.post(self.url, json=body, headers=headers)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if response.status_code in (408, 409, 429) or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise JudgeError(
                    f"the judge endpoint {self.url} refused the request (HTTP {response.status_code}: "
                    f"{response.text[:200]}); check {ENV_BASE_URL}, {ENV_MODEL} and {ENV_API_KEY}"
                )
            return _content(response)
        raise TransientJudgeError(f"{self.url}: no reply after {self.config.http_retries + 1} tries ({last})")


def _content(response: httpx.Response) -> str:
    try:
        data = response.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise MalformedReply(f"not a chat-completions response: {response.text[:200]!r}") from None
    if not isinstance(content, str):
        raise MalformedReply(f"message content is {type(content).__name__}, expected text")
    return content


@dataclass
class Verdict(Generic[T]):
    id: str
    value: T | None
    attempts: int
    errors: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None


RETRY_NOTE = (
    "Your reply could not be read: {error}. Reply again, following the required output format exactly."
)


def judge_one(
    client: ChatClient, item_id: str, messages: Sequence[Mapping[str, str]], parse: Callable[[str], T]
) -> Verdict[T]:
    """Ask until ``parse`` accepts the reply or the attempts run out (then a failed verdict)."""
    verdict: Verdict[T] = Verdict(item_id, None, 0)
    convo = [dict(m) for m in messages]
    for _ in range(client.config.attempts):
        verdict.attempts += 1
        try:
            reply = client.complete(convo)
        except MalformedReply as e:
            verdict.errors.append(str(e))
            continue
        except TransientJudgeError as e:
            verdict.errors.append(str(e))
            break
        verdict.replies.append(reply)
        try:
            verdict.value = parse(reply)
            return verdict
        except MalformedReply as e:
            verdict.errors.append(str(e))
            convo = [*convo, {"role": "assistant", "content": reply}, {"role": "user", "content": RETRY_NOTE.format(error=e)}]
    return verdict


@dataclass(frozen=True)
class JudgeItem:
    id: str
    messages: list[dict[str, str]]


def run_judge(
    client: ChatClient,
    items: Sequence[JudgeItem],
    parse: Callable[[str], Any],
    log_path: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Verdict[Any]]:
    """Verdicts for every item; with ``log_path``, earlier verdicts are reused and new ones appended."""
    previous: dict[str, Verdict[Any]] = {}
    log = None
    if log_path is not None:
        log = PredictionLog(log_path)
        if Path(log_path).exists():
            for rec in read_records(log_path, "judge review log"):
                previous[record_id(rec["id"])] = Verdict(
                    record_id(rec["id"]), rec.get("value"), int(rec.get("attempts", 0)),
                    list(rec.get("errors") or []), list(rec.get("replies") or []),
                )
    out: dict[str, Verdict[Any]] = {}
    todo = [it for it in items if it.id not in previous]
    iterator: Any = todo
    if progress and todo:
        from rich.progress import track

        iterator = track(todo, description="judging")
    for item in iterator:
        v = judge_one(client, item.id, item.messages, parse)
        if log is not None:
            log.append([{"id": v.id, "value": v.value, "attempts": v.attempts, "errors": v.errors, "replies": v.replies}])
        out[item.id] = v
    for item in items:
        if item.id in previous:
            out[item.id] = previous[item.id]
    return out
