from __future__ import annotations

import json
from pathlib import Path

import pytest

from tg_eval.describe import DescribeItem, parse_assessment, score_descriptions
from tg_eval.judge import ChatClient, JudgeConfig, JudgeError, MalformedReply, load_prompt
from tg_eval.llava_bench import BenchQuestion, parse_score_pair, score_llava_bench
from tg_eval.predictions import PredictionSet


def client_for(server, attempts: int = 3) -> ChatClient:
    config = JudgeConfig(base_url=server.url, model="judge-x", api_key="sk-test", attempts=attempts,
                         http_retries=2, backoff_s=0.0, timeout_s=10)
    return ChatClient(config, sleep=lambda s: None)


@pytest.mark.parametrize(
    ("reply", "scores"),
    [("8 7\nAssistant 1 is more detailed.", [8.0, 7.0]), ("9, 6.5\nok", [9.0, 6.5]), ("\n  10 10 \nfine", [10.0, 10.0])],
)
def test_score_pair_parser_accepts(reply: str, scores: list[float]) -> None:
    assert parse_score_pair(reply) == scores


@pytest.mark.parametrize("reply", ["Assistant 1: 8, Assistant 2: 7", "8\n7", "8 7 6", "11 3", "0 5", ""])
def test_score_pair_parser_rejects(reply: str) -> None:
    with pytest.raises(MalformedReply):
        parse_score_pair(reply)


def test_assessment_parser() -> None:
    assert parse_assessment('{"quality": 4, "richness": 3, "accuracy": 5, "reason": "ok"}') == {
        "quality": 4, "richness": 3, "accuracy": 5}  # fmt: skip
    assert parse_assessment('```json\n{"quality": 1, "richness": 2, "accuracy": 3}\n```')["accuracy"] == 3
    for bad in ('{"quality": 6, "richness": 3, "accuracy": 5}', '{"quality": 4.5, "richness": 3, "accuracy": 5}',
                '{"quality": 4, "richness": 3}', "Quality 4, richness 3", '[4, 3, 5]', '{"quality": true, "richness": 3, "accuracy": 5}'):
        with pytest.raises(MalformedReply):
            parse_assessment(bad)


def _bench() -> tuple[list[BenchQuestion], dict[str, str], PredictionSet, PredictionSet]:
    questions = [
        BenchQuestion("1", "001.jpg", "What is on the table?", "conv"),
        BenchQuestion("2", "001.jpg", "Describe the scene.", "detail"),
        BenchQuestion("3", "002.jpg", "Why is the man smiling?", "complex"),
        BenchQuestion("4", "002.jpg", "What colour is the car?", "conv"),
    ]
    captions = {"001.jpg": "A cup on a table.", "002.jpg": "A man next to a red car."}
    refs = PredictionSet.from_records([{"question_id": q.id, "text": f"reference {q.id}"} for q in questions])
    answers = PredictionSet.from_records([{"question_id": q, "text": f"answer {q}"} for q in ("1", "2", "3")])
    return questions, captions, refs, answers


def test_llava_bench_against_a_scripted_server(judge_server, tmp_path: Path) -> None:
    questions, captions, refs, answers = _bench()
    judge_server.reply("8 6\nAssistant 2 misses the cup's colour.")  # q1 (conv)
    judge_server.fail(503)  # q2: a transient error, retried at the HTTP level...
    judge_server.reply("Assistant 1 gets 9 and assistant 2 gets 9")  # ...then a malformed reply...
    judge_server.reply("9 9\nBoth are fine.")  # ...and, told what was wrong, a good one
    judge_server.reply("no scores")  # q3: malformed three times -> a recorded failure
    judge_server.reply("still no scores")
    judge_server.reply("7")
    log = tmp_path / "reviews.jsonl"
    result = score_llava_bench(questions, captions, refs, answers, client_for(judge_server), log, name="run")

    # conv: q1 only (q4 unanswered): 6/8 = 75.00 %; detail: q2 9/9 = 100 %; complex: failed.
    # all: reference mean (8+9)/2 = 8.5, model mean (6+9)/2 = 7.5 -> 7.5/8.5 = 88.24 %.
    assert result.rows["conv"] == {"relative": 75.0, "reference": 8.0, "model": 6.0, "n": 1}
    assert result.rows["detail"]["relative"] == 100.0
    assert "complex" not in result.rows
    assert result.rows["all"] == {"relative": 88.24, "reference": 8.5, "model": 7.5, "n": 2}
    assert result.counts["judge_failures"] == 1 and result.counts["missing"] == 1

    reqs = judge_server.requests
    assert len(reqs) == 7
    assert all(r["path"] == "/v1/chat/completions" and r["model"] == "judge-x" for r in reqs)
    assert judge_server.headers[0]["Authorization"] == "Bearer sk-test"
    first = reqs[0]["messages"]
    assert first[0]["role"] == "system"
    user = first[1]["content"]
    assert user.startswith("[Context]\nA cup on a table.\n\n[Question]\nWhat is on the table?")
    assert "[Assistant 1]\nreference 1\n\n[End of Assistant 1]" in user
    assert "[Assistant 2]\nanswer 1\n\n[End of Assistant 2]" in user
    assert load_prompt("llava_bench_rule") in user
    # The retry after a malformed reply shows the judge its reply and what was wrong with it.
    retry = reqs[3]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "Assistant 1 gets 9 and assistant 2 gets 9"}
    assert "could not be read" in retry[-1]["content"] and "two scores" in retry[-1]["content"]

    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["id"] for r in logged] == ["1", "2", "3"]
    assert logged[2]["value"] is None and logged[2]["attempts"] == 3 and len(logged[2]["errors"]) == 3

    # Resuming reads every verdict back, failures included: no new requests, same numbers.
    again = score_llava_bench(questions, captions, refs, answers, client_for(judge_server), log, name="run")
    assert len(judge_server.requests) == 7
    assert again.rows == result.rows


def test_auth_failure_stops_with_a_clear_error(judge_server) -> None:
    judge_server.fail(401, {"error": {"message": "invalid api key"}})
    questions, captions, refs, answers = _bench()
    with pytest.raises(JudgeError, match="HTTP 401"):
        score_llava_bench(questions, captions, refs, answers, client_for(judge_server))


def test_endpoint_down_is_a_recorded_failure(judge_server) -> None:
    for _ in range(3):
        judge_server.fail(500)
    judge_server.reply("8 8\nfine")
    judge_server.reply("8 4\nweaker")
    questions, captions, refs, answers = _bench()
    result = score_llava_bench(questions[:3], captions, refs, answers, client_for(judge_server), None)
    # q1: 3 HTTP 500s exhaust 1 + 2 retries -> failure (not re-asked); q2 (8, 8); q3 (8, 4).
    assert result.counts["judge_failures"] == 1
    assert result.rows["all"]["relative"] == pytest.approx(round(100 * 6 / 8, 2))


def test_description_assessment(judge_server, tmp_path: Path) -> None:
    items = [DescribeItem("a", "A red circle [0.1,0.1,0.3,0.3]."), DescribeItem("b", "A blue star."), DescribeItem("c", "x")]
    preds = PredictionSet.from_records([{"id": "a", "text": "A red circle."}, {"id": "b", "text": "A star."}])
    judge_server.reply('{"quality": 5, "richness": 2, "accuracy": 5, "reason": "short but right"}')
    judge_server.reply('{"quality": 6, "richness": 2, "accuracy": 3}')  # out of range -> retried
    judge_server.reply('```json\n{"quality": 4, "richness": 1, "accuracy": 3, "reason": "no colour"}\n```')
    result = score_descriptions(items, preds, client_for(judge_server), tmp_path / "rev.jsonl")
    # means over a and b: quality (5+4)/2 = 4.50, richness (2+1)/2 = 1.50, accuracy (5+3)/2 = 4.00
    assert result.rows["all"] == {"quality": 4.5, "richness": 1.5, "accuracy": 4.0, "n": 2}
    assert result.counts["missing"] == 1
    prompt = judge_server.requests[0]["messages"][1]["content"]
    assert "A red circle [0.1,0.1,0.3,0.3]." in prompt and "[Description]\nA red circle." in prompt
    assert "$" not in prompt  # every template field was filled


def test_config_from_env() -> None:
    env = {"TG_EVAL_JUDGE_BASE_URL": "http://h/v1", "TG_EVAL_JUDGE_MODEL": "m", "OPENAI_API_KEY": "sk-secret"}
    cfg = JudgeConfig.from_env(env)
    assert (cfg.base_url, cfg.model, cfg.api_key) == ("http://h/v1", "m", "sk-secret")
    assert "sk-secret" not in repr(cfg)  # the key never shows in logs
    assert JudgeConfig.from_env(env, model="other").model == "other"
    with pytest.raises(JudgeError, match="TG_EVAL_JUDGE_MODEL"):
        JudgeConfig.from_env({"TG_EVAL_JUDGE_BASE_URL": "http://h/v1"})
    with pytest.raises(JudgeError, match="TG_EVAL_JUDGE_BASE_URL"):
        JudgeConfig.from_env({})
