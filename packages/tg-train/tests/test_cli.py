"""The tg-train CLI: listing, DeepSpeed configs, a run, and one clear line (no traceback) for user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tg_train.cli import app
from tg_train.recipe import shipped_recipes


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_user_error(result, *fragments: str) -> None:
    """Exit code 2, one 'error:' line on stderr that says what is wrong, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_recipes_lists_every_shipped_recipe_with_its_kind_and_description():
    result = invoke("recipes")
    assert result.exit_code == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(rows) == set(shipped_recipes())
    assert " pipeline " in rows["quickstart"] and " pipeline " in rows["paper"]
    assert " stage 1a " in rows["stage1a"] and "lr 1e-3" in rows["stage1a"]
    assert " stage 3 " in rows["stage3"] and "2 epochs" in rows["stage3"]


@pytest.mark.parametrize(
    ("args", "global_", "micro", "accum"),
    [
        (["stage2", "--world-size", "8"], 32, 4, 1),
        (["stage3", "--world-size", "8"], 16, 2, 1),
        (["stage2", "--world-size", "4"], 32, 4, 2),
        (["stage2", "--world-size", "8", "--set", "batch.micro=2"], 32, 2, 2),
    ],
)
def test_deepspeed_config_splits_the_global_batch(args: list[str], global_: int, micro: int, accum: int):
    result = invoke("deepspeed-config", *args)
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)
    world = int(args[args.index("--world-size") + 1])
    assert config["train_batch_size"] == global_ == world * micro * accum
    assert config["train_micro_batch_size_per_gpu"] == micro and config["gradient_accumulation_steps"] == accum
    assert config["zero_optimization"]["stage"] == 2 and config["bf16"]["enabled"] is True
    assert config["gradient_clipping"] == 1.0


def test_deepspeed_config_errors():
    assert_user_error(invoke("deepspeed-config", "stage2", "--world-size", "3"), "batch.global (32)", "(4 x 3)")
    assert_user_error(invoke("deepspeed-config", "nope"), "'nope' is neither a file nor a shipped recipe")


def test_run_with_an_unknown_key_names_the_file_and_the_key(tmp_path: Path, make_recipe):
    path = make_recipe("bad")
    path.write_text(path.read_text().replace("max_steps", "max_stepz"))
    assert_user_error(invoke("run", str(path)), str(path), "unknown key optim.'max_stepz'", "max_steps")


def test_run_with_a_wrong_type_from_set(make_recipe):
    assert_user_error(invoke("run", str(make_recipe()), "--set", "batch.micro=four"), "batch.micro: expected int")


def test_paper_recipe_without_its_data_names_the_missing_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(invoke("run", "stage1a"), "stage1a.toml", "data[0].path 'data/llava_cc3m_pretrain_595k/chat.json' does not exist")
    assert not (tmp_path / "runs").exists()


def test_pipeline_and_quickstart_errors(tmp_path: Path):
    assert_user_error(invoke("pipeline", str(tmp_path / "none.toml")), "none.toml", "is neither a file")
    assert_user_error(invoke("quickstart", "--set", "shapes.trains=5"), "unknown key shapes.'trains'")


def test_run_trains_with_overrides_and_tolerates_the_launchers_local_rank(make_recipe, tmp_path: Path):
    path = make_recipe("cli", optim={"max_steps": 5})
    result = invoke("--local_rank=0", "run", str(path), "--set", "optim.max_steps=2", "--set", "logging.every_steps=2")
    assert result.exit_code == 0, result.output
    assert "done: 2 steps, final loss" in result.stdout
    assert f"export {tmp_path / 'run-cli' / 'export'}" in result.stdout
    assert (tmp_path / "run-cli" / "export" / "config.json").is_file()
    assert [json.loads(line)["step"] for line in (tmp_path / "run-cli" / "metrics.jsonl").read_text().splitlines()] == [2]
