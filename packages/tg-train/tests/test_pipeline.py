"""Pipelines: variable substitution, per-stage overrides, early errors, and stages chained through exports."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from tg_model.presets import build_model
from tg_train.cli import app
from tg_train.pipeline import load_pipeline, run_pipeline, stage_recipe
from tg_train.recipe import RecipeError


def _pipeline(tmp_path: Path, stages: str, shapes: str = "") -> Path:
    path = tmp_path / "pipe.toml"
    path.write_text(f'name = "pipe"\noutput_dir = "{tmp_path / "out"}"\n{shapes}\n{stages}')
    return path


STAGE = """
name = "${{output_dir}}-{name}"
stage = "{stage}"
output_dir = "ignored: the pipeline decides"
[model]
{model}
overrides = {{ text_num_hidden_layers = 1, text_hidden_size = 64, text_intermediate_size = 128, text_num_attention_heads = 2, text_num_key_value_heads = 1 }}
[train]
llm = {llm}
[optim]
lr = 1e-3
max_steps = 2
[batch]
global = 8
micro = 4
num_workers = 0
[logging]
every_steps = 1
progress = false
tensorboard = false
[[data]]
path = "${{data}}/train.parquet"
"""


def _stage(tmp_path: Path, name: str, stage: str = "2", model: str = 'preset = "tiny"', llm: str = "true") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(STAGE.format(name=name, stage=stage, model=model, llm=llm))
    return path


def test_variables_outputs_and_starting_models(tmp_path: Path):
    towers = 'preset = "tiny"\nencoder_weights = ["${towers}/tower-0.safetensors", "${towers}/tower-1.safetensors"]'
    first, second = _stage(tmp_path, "first", model=towers), _stage(tmp_path, "second", model='init = "${prev}"')
    pipeline = load_pipeline(str(_pipeline(
        tmp_path, f'[[stages]]\nrecipe = "{first}"\n[[stages]]\nrecipe = "{second}"\nset = ["optim.lr=5e-4"]\n'
    )))
    out = tmp_path / "out"
    r1 = stage_recipe(pipeline, 0, check_files=False)
    assert r1.name == f"{out}-first"
    assert r1.data[0].path == f"{out}/shapes/train.parquet"  # ${data}: the pipeline's shapes world
    assert r1.output_dir == str(out / "stage1")
    assert (r1.model.preset, r1.model.init) == ("tiny", "")
    assert r1.model.encoder_weights == [f"{out}/towers/tower-{i}.safetensors" for i in range(2)]  # ${towers}
    with pytest.raises(RecipeError, match=r"towers/tower-0\.safetensors"):  # not pretrained: named before training
        stage_recipe(pipeline, 0)
    r2 = stage_recipe(pipeline, 1, extra=["batch.micro=2"], check_files=False)
    assert (r2.model.preset, r2.model.init) == ("", str(out / "stage1" / "export"))  # ${prev}
    assert r2.output_dir == str(out / "stage2")
    assert r2.optim.lr == 5e-4 and r2.batch.micro == 2  # the stage's own --set, then the caller's
    # a later stage starts from the previous export even when its recipe names a preset
    pipeline.stages[1].recipe = str(_stage(tmp_path, "third"))
    assert stage_recipe(pipeline, 1, check_files=False).model == r2.model


def test_unknown_variables_and_prev_in_the_first_stage(tmp_path: Path):
    uses_prev = _stage(tmp_path, "uses-prev", model='init = "${prev}"')
    pipeline = load_pipeline(str(_pipeline(tmp_path, f'[[stages]]\nrecipe = "{uses_prev}"\n')))
    with pytest.raises(RecipeError, match=r"unknown variable \$\{prev\}; known: \['data', 'output_dir', 'towers'\]"):
        stage_recipe(pipeline, 0, check_files=False)
    typo = tmp_path / "typo.toml"
    typo.write_text(_stage(tmp_path, "x").read_text().replace("${data}", "${dataa}"))
    pipeline.stages[0].recipe = str(typo)
    with pytest.raises(RecipeError, match=rf"{typo}: unknown variable \$\{{dataa\}}"):
        stage_recipe(pipeline, 0, check_files=False)


def test_pipeline_file_errors(tmp_path: Path):
    with pytest.raises(RecipeError, match="at least one"):
        load_pipeline(str(_pipeline(tmp_path, "")))
    with pytest.raises(RecipeError, match=r"'nope\.toml' is neither a file nor a shipped recipe"):
        load_pipeline(str(_pipeline(tmp_path, '[[stages]]\nrecipe = "nope.toml"\n')))
    with pytest.raises(RecipeError, match=r"unknown key stages\[0\]\.'sett'"):
        load_pipeline(str(_pipeline(tmp_path, f'[[stages]]\nrecipe = "{_stage(tmp_path, "a")}"\nsett = []\n')))


def test_a_broken_later_stage_stops_the_pipeline_before_any_training(tmp_path: Path):
    good = _stage(tmp_path, "good")
    bad = tmp_path / "bad.toml"
    bad.write_text(_stage(tmp_path, "b").read_text().replace("max_steps = 2", "max_step = 2"))
    pipeline = load_pipeline(str(_pipeline(
        tmp_path, f'[[stages]]\nrecipe = "{good}"\n[[stages]]\nrecipe = "{bad}"\n',
        shapes="[shapes]\ntrain = 4\nimage_size = 64\n",
    )))
    with pytest.raises(RecipeError, match=rf"{bad}: unknown key optim\.'max_step'"):
        run_pipeline(pipeline)
    assert not (tmp_path / "out").exists(), "nothing is generated or trained before every stage checks out"


def test_pipeline_generates_its_world_and_chains_stages_through_exports(tmp_path: Path):
    """Stage 2 trains the projector only; its LLM must be stage 1's trained LLM, not the preset's."""
    first = _stage(tmp_path, "first", stage="2", llm="true")
    second = _stage(tmp_path, "second", stage="1a", model='init = "${prev}"', llm="false")
    path = _pipeline(
        tmp_path, f'[[stages]]\nrecipe = "{first}"\n[[stages]]\nrecipe = "{second}"\n',
        shapes="[shapes]\ntrain = 5\nimage_size = 64\nmax_shapes = 3\n",
    )
    result = CliRunner().invoke(app, ["pipeline", str(path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert (out / "shapes" / "manifest.json").is_file() and (out / "shapes" / "train.parquet").is_file()
    assert f"{out / 'stage2' / 'export'}: 2 steps" in result.output
    one = load_file(out / "stage1" / "export" / "model.safetensors")
    two = load_file(out / "stage2" / "export" / "model.safetensors")
    llm = [k for k in one if k.startswith("language_model.")]
    projector = [k for k in one if k.startswith("projector.")]
    assert llm and all(one[k].equal(two[k]) for k in llm)
    assert not all(one[k].equal(two[k]) for k in projector)
    # and stage 1 did train its LLM: a stage that restarted from the preset would not have it
    fresh, _ = build_model("tiny", seed=42, text_num_hidden_layers=1, text_hidden_size=64, text_intermediate_size=128,
                           text_num_attention_heads=2, text_num_key_value_heads=1)
    fresh_state = fresh.state_dict()
    assert not all(fresh_state[k].equal(two[k]) for k in llm)
