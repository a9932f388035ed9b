"""Checkpoints: keep the last K, atomic saves, and a run SIGKILLed at a random step resuming bit-identically."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tg_train.checkpoint import complete_checkpoints, find_resume
from tg_train.metrics import read_metrics
from tg_train.recipe import RecipeError, load_recipe
from tg_train.trainer import train

STEPS = 6
# checkpoints every step, two micro-batches per step (so resuming must land on a step boundary of the
# accumulation), a DataLoader worker (so resuming must restart the loader at the right batch)
RESUMABLE = {
    "optim": {"max_steps": STEPS, "lr": 1e-3, "warmup_ratio": 0.2},
    "batch": {"global": 4, "micro": 2, "num_workers": 1},
    "checkpoint": {"every_steps": 1, "keep_last": 2},
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, recipe_file) -> Path:
    """An uninterrupted run: its output directory."""
    d = tmp_path_factory.mktemp("reference")
    recipe = load_recipe(str(recipe_file(d, "reference", **RESUMABLE)))
    train(recipe)
    return Path(recipe.output_dir)


def _assert_same_run(run: Path, reference: Path, context: str = "") -> None:
    ours = load_file(run / "export" / "model.safetensors")
    theirs = load_file(reference / "export" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not ours[k].equal(theirs[k])]
    assert not different, f"{context}: resumed weights differ from the uninterrupted run's in {different[:5]}"
    # the metrics carry each step once (lines the killed run wrote past its checkpoint are dropped), with
    # exactly the uninterrupted run's losses
    ours_m, theirs_m = read_metrics(run / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    assert [r["step"] for r in ours_m] == list(range(1, STEPS + 1)), context
    assert [(r["loss"], r["lr"], r["samples"]) for r in ours_m] == [(r["loss"], r["lr"], r["samples"]) for r in theirs_m], context


def test_keeps_the_last_k_complete_checkpoints(reference: Path):
    assert [p.name for p in complete_checkpoints(reference)] == [f"step-{STEPS - 1}", f"step-{STEPS}"]
    assert not list((reference / "checkpoints").glob(".tmp-*"))
    assert find_resume(reference, "auto") == reference / "checkpoints" / f"step-{STEPS}"
    assert find_resume(reference, "never") is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        find_resume(reference, str(reference / "checkpoints"))


def test_a_fresh_run_refuses_to_mix_with_an_earlier_runs_checkpoints(reference: Path, recipe_file, tmp_path: Path):
    recipe = load_recipe(str(recipe_file(tmp_path, "again", output_dir=reference, **RESUMABLE)),
                         ["checkpoint.resume=never"])
    with pytest.raises(RecipeError, match=r"holds checkpoints of an earlier run \(step-6, ...\)"):
        train(recipe)
    assert [p.name for p in complete_checkpoints(reference)] == [f"step-{STEPS - 1}", f"step-{STEPS}"]


def test_checkpoints_of_a_differently_shaped_model_are_refused_by_name(reference: Path, recipe_file, tmp_path: Path,
                                                                       small_llm):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    wider = {**small_llm, "text_hidden_size": 96, "text_intermediate_size": 192}
    recipe = load_recipe(str(recipe_file(tmp_path, "wider", output_dir=run, model={"overrides": wider}, **RESUMABLE)))
    with pytest.raises(RecipeError) as e:
        train(recipe)
    message = str(e.value)
    assert f"{run / 'checkpoints' / f'step-{STEPS}'} was written by a model of another shape" in message
    assert "size mismatch for" in message and "another output_dir" in message
    assert [p.name for p in complete_checkpoints(run)] == [f"step-{STEPS - 1}", f"step-{STEPS}"]


def _kill_when(proc: subprocess.Popen, metrics: Path, step: int, timeout: float = 300) -> None:
    """SIGKILL the run as soon as it has logged ``step``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        records = read_metrics(metrics) if metrics.is_file() else []
        if records and records[-1]["step"] >= step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (code {proc.returncode}) before step {step}: {(out + err)[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"the run did not reach step {step} in {timeout} s")


def test_run_killed_at_a_random_step_resumes_to_the_same_weights(make_recipe, tmp_path: Path, reference: Path, clean_env):
    # a different step each run; TG_TEST_KILL_STEP=k replays the step a failure message names
    kill_at = int(os.environ.get("TG_TEST_KILL_STEP") or random.Random(time.time_ns()).randint(1, STEPS - 1))
    recipe_path = make_recipe("killed", **RESUMABLE)
    out = tmp_path / "run-killed"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "tg-train"), "run", str(recipe_path)], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    _kill_when(proc, out / "metrics.jsonl", kill_at)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "export").exists(), "the run finished before the kill"
    done = complete_checkpoints(out)  # none when the kill came before step 1's save completed
    resumed_from = int(done[-1].name.split("-")[1]) if done else 0
    assert resumed_from < STEPS

    result = train(load_recipe(str(recipe_path)))  # resume = "auto": from the latest complete checkpoint
    assert result.global_step == STEPS
    _assert_same_run(out, reference, f"killed after step {kill_at}, resumed from step {resumed_from}")


KILL_DURING_SAVE = """
import os, signal, sys
import tg_train.checkpoint as checkpoint
from tg_train.recipe import RecipeError, load_recipe
from tg_train.trainer import train

rng_state = checkpoint.rng_state
save = checkpoint.save_checkpoint

def dying_save(engine, output_dir, state, rank, keep_last):
    # die inside the save of step 4: after DeepSpeed wrote its files, before the checkpoint is complete
    checkpoint.rng_state = (lambda: os.kill(os.getpid(), signal.SIGKILL)) if state.global_step == 4 else rng_state
    return save(engine, output_dir, state, rank, keep_last)

import tg_train.trainer
tg_train.trainer.save_checkpoint = dying_save
train(load_recipe(sys.argv[1]))
"""


def test_kill_during_a_save_leaves_the_previous_checkpoint_usable(make_recipe, tmp_path: Path, reference: Path, clean_env):
    recipe_path = make_recipe("dies-saving", **RESUMABLE)
    out = tmp_path / "run-dies-saving"
    script = tmp_path / "dies_saving.py"
    script.write_text(KILL_DURING_SAVE)
    proc = subprocess.run([sys.executable, str(script), str(recipe_path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=clean_env())
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    partial = out / "checkpoints" / ".tmp-step-4"
    assert (partial / "state" / "mp_rank_00_model_states.pt").is_file()  # DeepSpeed's part was written ...
    assert not (partial / "trainer_state.json").exists()  # ... the checkpoint was never completed
    assert [p.name for p in complete_checkpoints(out)] == ["step-2", "step-3"]
    assert find_resume(out, "auto") == out / "checkpoints" / "step-3"

    result = train(load_recipe(str(recipe_path)))
    assert result.global_step == STEPS
    assert not partial.exists(), "the half-written checkpoint is cleaned up by the next save"
    _assert_same_run(out, reference)
