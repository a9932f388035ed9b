from __future__ import annotations

import random
from pathlib import Path

import pytest

from tg_synth.backends.retry import RetryPolicy, is_retryable_status, parse_retry_after
from tg_synth.cache import DONE, QUARANTINED, CacheBusyError, Row, StepCache, stable_hash, step_key


def test_key_depends_on_step_input_prompt_and_backend() -> None:
    base = step_key("relate", "h1", "relate/v1#abc", "openai:m")
    variants = [
        step_key("refer", "h1", "relate/v1#abc", "openai:m"),
        step_key("relate", "h2", "relate/v1#abc", "openai:m"),
        step_key("relate", "h1", "relate/v2#abc", "openai:m"),
        step_key("relate", "h1", "relate/v1#abc", "openai:other"),
    ]
    assert base == step_key("relate", "h1", "relate/v1#abc", "openai:m")
    assert len({base, *variants}) == 5
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})


def test_rows_round_trip_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with StepCache(path) as cache:
        cache.put(Row("k1", "recognize", DONE, value={"objects": ["car"]}, calls=2, prompt_tokens=10,
                      completion_tokens=3, cost=0.5), "h", "p", "b")
        cache.put(Row("k2", "relate", QUARANTINED, reason="HTTP 500 after 6 attempts", raw="oops"), "h", "p", "b")
    with StepCache(path) as cache:
        r1, r2 = cache.get("k1"), cache.get("k2")
        assert r1 is not None and r1.done and r1.value == {"objects": ["car"]} and r1.calls == 2 and r1.cost == 0.5
        assert r2 is not None and not r2.done and r2.reason == "HTTP 500 after 6 attempts" and r2.raw == "oops"
        assert cache.get("k3") is None
        summary = cache.summary()
        assert summary["recognize"]["done"] == 1 and summary["recognize"]["prompt_tokens"] == 10
        assert summary["relate"]["quarantined"] == 1
        assert cache.delete_quarantined() == 1
        assert cache.get("k2") is None and cache.keys() == {"k1"}


def test_a_second_run_cannot_open_a_cache_in_use(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with StepCache(path), pytest.raises(CacheBusyError, match="another tg-synth run is using this cache"):
        StepCache(path)
    StepCache(path).close()  # free again once the first is closed


def test_backoff_stays_inside_the_exponential_envelope_and_jitters() -> None:
    policy = RetryPolicy(max_attempts=6, base_s=0.5, max_s=4.0)
    rng = random.Random(0)
    for attempt in range(6):
        waits = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0 <= w <= min(4.0, 0.5 * 2**attempt) for w in waits)
        assert len({round(w, 6) for w in waits}) > 150  # jittered, not a fixed schedule
    # a server's Retry-After is a floor, capped by the maximum wait
    assert policy.delay(0, rng, retry_after=2.0) >= 2.0
    assert policy.delay(0, rng, retry_after=60.0) == 4.0


def test_retryable_statuses_and_retry_after_parsing() -> None:
    assert all(is_retryable_status(s) for s in (408, 429, 500, 502, 503, 504))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 422))
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None and parse_retry_after(None) is None
