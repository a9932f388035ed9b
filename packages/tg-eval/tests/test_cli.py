from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tg_eval.cli import app

runner = CliRunner()


def ok(args: list[str], env: dict[str, str] | None = None):
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == 0, res.output + (res.stderr or "")
    return res


def user_error(args: list[str], env: dict[str, str] | None = None) -> str:
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == 2, res.output
    assert ("Traceback" not in res.output and res.exception is None) or isinstance(res.exception, SystemExit)
    err = res.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    return err


def test_pope_cli_on_the_fixtures(shared_fixtures: Path, tmp_path: Path, write_jsonl) -> None:
    pope = shared_fixtures / "pope"
    questions = [json.loads(line) for line in (pope / "llava_pope_test.jsonl").read_text().splitlines()]
    answers = write_jsonl(tmp_path / "answers.jsonl", [{"question_id": q["question_id"], "text": "Yes"} for q in questions])
    out = tmp_path / "res" / "pope.json"
    res = ok(["pope", "--questions", str(pope / "llava_pope_test.jsonl"), "--labels", str(pope),
              "--answers", str(answers), "--json", str(out)])
    # Always "yes": recall 100, yes-ratio 100; random has 1500 yes of 2910 -> acc 51.55.
    assert "| random | 51.55 | 51.55 | 100.00 |" in res.stdout
    assert "random: 90 of 3000 labelled questions are not in the question file" in res.stdout
    data = json.loads(out.read_text())
    assert data["counts"]["labels_not_asked"] == 90 and data["counts"]["matched_by_fix"] == 246
    assert out.with_suffix(".md").is_file()


def test_rec_and_pope_cli_on_the_shapes_world(shapes_dir: Path, tmp_path: Path, write_jsonl) -> None:
    from tg_data.io import read_parquet

    samples = list(read_parquet(str(shapes_dir / "test.parquet")))
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"id": s.id, "text": s.turns[1].text} for s in samples if s.task == "rec"])
    res = ok(["rec", "--shapes", str(shapes_dir), "--predictions", str(rec)])
    assert "| shapes-test | 100.00 |" in res.stdout
    pope = write_jsonl(tmp_path / "pope.jsonl", [{"id": s.id, "text": "No"} for s in samples if s.task == "pope"])
    res = ok(["pope", "--shapes", str(shapes_dir), "--answers", str(pope), "--json", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text())["rows"]["random"]["yes_ratio"] == 0.0


def test_other_scoring_commands(tmp_path: Path, write_jsonl) -> None:
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"annotations": [{"question_id": 1, "answers": ["two"] * 10, "answer_type": "number"}]}))
    preds = write_jsonl(tmp_path / "vqa.jsonl", [{"question_id": 1, "text": "two"}])
    # Unanimous "two" is compared as written while the prediction becomes "2": 0, as the server does.
    assert "| overall | 0.00 | 1 |" in ok(["vqav2", "--annotations", str(ann), "--predictions", str(preds)]).stdout

    gqa = tmp_path / "gqa.json"
    gqa.write_text(json.dumps({"7": {"answer": "yes", "types": {"structural": "verify"}}}))
    gp = tmp_path / "gqa_pred.json"
    gp.write_text(json.dumps([{"questionId": "7", "prediction": "yes"}]))
    assert "| overall | 100.00 | 1 |" in ok(["gqa", "--questions", str(gqa), "--predictions", str(gp)]).stdout

    sqa = tmp_path / "problems.json"
    sqa.write_text(json.dumps({"9": {"split": "test", "image": "i.png", "choices": ["a", "b"], "answer": 1}}))
    sp = write_jsonl(tmp_path / "sqa.jsonl", [{"question_id": "9", "text": "B"}])
    assert "| overall | 100.00 | 1 |" in ok(["scienceqa", "--problems", str(sqa), "--predictions", str(sp)]).stdout

    mme = write_jsonl(tmp_path / "mme.jsonl", [
        {"question_id": "count/1.jpg", "question": "Two dogs? Please answer yes or no.", "answer": "Yes", "category": "count"},
        {"question_id": "count/1.jpg", "question": "Three dogs? Please answer yes or no.", "answer": "No", "category": "count"},
    ])
    mp = write_jsonl(tmp_path / "mme_pred.jsonl", [
        {"question_id": "count/1.jpg", "prompt": "Two dogs? Please answer yes or no.", "text": "Yes"},
        {"question_id": "count/1.jpg", "prompt": "Three dogs? Please answer yes or no.", "text": "No"},
    ])
    assert "| count | 100.00 | 100.00 | 200.00 | 2 |" in ok(["mme", "--truth", str(mme), "--predictions", str(mp)]).stdout

    tsv = tmp_path / "mmb.tsv"
    with tsv.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["index", "question", "A", "B", "answer", "l2-category"])
        w.writerow([0, "Which?", "cat", "dog", "B", "FP-S"])
    mbp = write_jsonl(tmp_path / "mmb.jsonl", [{"question_id": 0, "round_id": 0, "text": "B"}, {"question_id": 0, "round_id": 1, "text": "A"}])
    assert "| overall | 100.00 | 100.00 | 1 |" in ok(["mmbench", "--questions", str(tsv), "--predictions", str(mbp)]).stdout

    sim = tmp_path / "sim.npy"
    np.save(sim, np.eye(3).repeat(5, axis=1))
    assert "| custom | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 600.0 | 1.0 | 1.0 |" in ok(
        ["retrieval", "--sim", str(sim), "--protocol", "custom"]).stdout


def test_judge_commands_through_the_environment(judge_server, tmp_path: Path, write_jsonl) -> None:
    q = write_jsonl(tmp_path / "questions.jsonl", [{"question_id": 1, "image": "1.jpg", "text": "What?", "category": "conv"}])
    c = write_jsonl(tmp_path / "context.jsonl", [{"image": "1.jpg", "caption": "A dog."}])
    ref = write_jsonl(tmp_path / "ref.jsonl", [{"question_id": 1, "text": "A dog."}])
    ans = write_jsonl(tmp_path / "ans.jsonl", [{"question_id": 1, "text": "A cat."}])
    env = {"TG_EVAL_JUDGE_BASE_URL": judge_server.url, "TG_EVAL_JUDGE_MODEL": "judge-x", "TG_EVAL_JUDGE_API_KEY": "sk-1"}
    judge_server.reply("8 2\nWrong animal.")
    res = ok(["llava-bench", "--questions", str(q), "--context", str(c), "--references", str(ref), "--answers", str(ans),
              "--reviews", str(tmp_path / "rev.jsonl")], env=env)
    assert "| conv | 25.00 | 8.00 | 2.00 | 1 |" in res.stdout
    judge_server.reply('{"quality": 3, "richness": 2, "accuracy": 1}')
    truth = write_jsonl(tmp_path / "desc.jsonl", [{"id": "x", "context": "A dog."}])
    dp = write_jsonl(tmp_path / "dp.jsonl", [{"id": "x", "text": "A cat."}])
    res = ok(["describe", "--truth", str(truth), "--predictions", str(dp), "--reviews", str(tmp_path / "d.jsonl")], env=env)
    assert "| all | 3.00 | 2.00 | 1.00 | 1 |" in res.stdout
    err = user_error(["describe", "--truth", str(truth), "--predictions", str(dp), "--reviews", str(tmp_path / "e.jsonl")],
                     env={"TG_EVAL_JUDGE_BASE_URL": "", "TG_EVAL_JUDGE_MODEL": "", "OPENAI_BASE_URL": ""})
    assert "TG_EVAL_JUDGE_BASE_URL" in err


def test_compare_cli_writes_table_and_png(tmp_path: Path) -> None:
    sim = tmp_path / "sim.npy"
    np.save(sim, np.eye(3).repeat(5, axis=1))
    ok(["retrieval", "--sim", str(sim), "--protocol", "custom", "--json", str(tmp_path / "a.json"), "--name", "A"])
    ok(["retrieval", "--sim", str(sim), "--protocol", "custom", "--json", str(tmp_path / "b.json"), "--name", "B"])
    res = ok(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--png", str(tmp_path / "c.png"),
              "--markdown", str(tmp_path / "c.md")])
    assert "| benchmark | metric | A | B |" in res.stdout
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "c.md").read_text().startswith("| benchmark")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rec", "--predictions", "{d}/p.jsonl"], "give exactly one of --truth or --shapes"),
        (["rec", "--predictions", "{d}/missing.jsonl", "--truth", "{d}/t.jsonl"], "no such file"),
        (["pope", "--answers", "{d}/p.jsonl", "--questions", "{d}/p.jsonl"], "give --questions and --labels"),
        (["pope", "--answers", "{d}/p.jsonl", "--questions", "{d}/p.jsonl", "--labels", "{d}"], "missing field 'question_id'"),
        (["pope", "--answers", "{d}/p.jsonl", "--questions", "{d}/q.jsonl", "--labels", "{d}"], "holds none of the POPE label files"),
        (["vqav2", "--annotations", "{d}/broken.json", "--predictions", "{d}/p.jsonl"], "broken.json:2: malformed JSON"),
        (["retrieval", "--sim", "{d}/p.jsonl", "--protocol", "custom"], "not a NumPy"),
        (["compare", "{d}/p.jsonl"], "not a tg-eval result"),
        (["rec", "--shapes", "{d}", "--predictions", "{d}/p.jsonl"], "no test.parquet here"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, write_jsonl, args: list[str], message: str) -> None:
    write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "text": "x"}])
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "category": "random"}])
    (tmp_path / "broken.json").write_text('{"question_id": 1}\n{"question_id": \n')
    err = user_error([a.format(d=tmp_path) for a in args])
    assert message in err
