"""``tg-eval run`` end to end: a tiny-preset model answers the shapes world's REC and POPE splits.

The model is untrained, so its accuracy is near zero; what is checked is the pipeline: every
question asked once, the files in their formats, the counts in the result, and resuming.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tg_data.io import read_parquet
from tg_eval.cli import app
from tg_eval.shapes import REC_MAX_NEW_TOKENS, shapes_requests

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from tg_model.presets import build_model

    torch.set_num_threads(1)  # shared cores: one thread per process runs faster than two contending
    model, tokenizer = build_model("tiny")
    # Freshly initialised, the tiny preset answers everything with one token repeated; wider random
    # weights make answers differ between questions, so comparing them below means something.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in (model.language_model, model.projector):
            for p in module.parameters():
                if p.ndim == 2:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    out = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ids_of(shapes_dir: Path, task: str) -> list[str]:
    return [s.id for s in read_parquet(str(shapes_dir / "test.parquet")) if s.task == task]


def test_run_rec_generates_scores_and_resumes(shapes_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    preds, result = tmp_path / "rec.jsonl", tmp_path / "rec.json"
    args = ["run", "rec", "--model", str(model_dir), "--shapes", str(shapes_dir), "--predictions", str(preds),
            "--json", str(result), "--batch-size", "4", "--threads", "1"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    want = ids_of(shapes_dir, "rec")
    rows = lines(preds)
    assert [row["id"] for row in rows] == want and all(set(row) == {"id", "text"} for row in rows)
    scored = json.loads(result.read_text())
    split = scored["rows"]["shapes-test"]
    assert split["n"] == len(want) and split["missing"] == 0
    assert split["correct"] + split["unparseable"] <= len(want)
    assert result.with_suffix(".md").is_file()
    assert f"{len(want)} generated, 0 already in" in r.stdout

    # Resume: drop the last two answers (and cut the one before mid-line); only those are redone.
    text = preds.read_text().splitlines(keepends=True)
    preds.write_text("".join(text[:-3]) + text[-3][: len(text[-3]) // 2])
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert f"3 generated, {len(want) - 3} already in" in again.stdout and "cut off" in again.stdout
    assert lines(preds) == rows  # greedy decoding: the same answers, each id once
    done = runner.invoke(app, args)
    assert f"0 generated, {len(want)} already in" in done.stdout


def test_rec_and_pope_commands_take_a_model(shapes_dir: Path, model_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    answers = tmp_path / "pope.jsonl"
    r = runner.invoke(app, ["pope", "--shapes", str(shapes_dir), "--model", str(model_dir), "--answers", str(answers),
                            "--json", str(tmp_path / "pope.json"), "--threads", "1"])
    assert r.exit_code == 0, r.output
    want = ids_of(shapes_dir, "pope")
    assert sorted(row["id"] for row in lines(answers)) == sorted(want)
    scored = json.loads((tmp_path / "pope.json").read_text())
    assert sum(scored["rows"][c]["n"] for c in ("random", "popular", "adversarial")) == len(want)
    assert scored["counts"]["unknown_answers"] == 0
    # rec with --model and no --predictions writes to runs/eval/ under the working directory.
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["rec", "--shapes", str(shapes_dir), "--model", str(model_dir), "--threads", "1"])
    assert r.exit_code == 0, r.output
    default = tmp_path / "runs" / "eval" / f"{model_dir.name}-rec-shapes-test.jsonl"
    assert len(lines(default)) == len(ids_of(shapes_dir, "rec"))


def test_model_predictor_is_the_batched_predictor(shapes_dir: Path, model_dir: Path) -> None:
    from tg_eval.model import ModelPredictor
    from tg_eval.predictor import Predictor
    from tg_infer.predictor import Predictor as InferPredictor
    from tg_infer.requests import Request

    adapter = ModelPredictor.load(model_dir, batch_size=8)
    assert isinstance(adapter, Predictor)
    requests = shapes_requests(shapes_dir, "rec")[:5]
    texts = adapter.generate_batch(requests)
    assert len(set(texts)) > 1
    one_by_one = InferPredictor.load(model_dir)
    for req, text in zip(requests, texts, strict=True):
        assert req.max_new_tokens == REC_MAX_NEW_TOKENS
        alone = one_by_one.generate([Request.ask(req.prompt, req.image, max_new_tokens=req.max_new_tokens)])[0]
        assert text == alone.text


def test_running_mistakes_are_one_line(shapes_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    cases = [
        (["run", "vqav2", "--model", str(model_dir)], "takes one of ['rec', 'pope']"),
        (["run", "rec", "--model", str(tmp_path), "--shapes", str(shapes_dir)], "not a model directory"),
        (["run", "pope", "--model", str(model_dir), "--truth", str(tmp_path / "x.jsonl")], "not --truth"),
        (["rec", "--shapes", str(shapes_dir)], "give --predictions FILE (or --model DIR"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.stderr and "Traceback" not in r.output
