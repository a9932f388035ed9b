"""Recipes: typed loading, one clear error per bad recipe, --set overrides, the shipped recipes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import tomli_w

from tg_train.engine import deepspeed_config, gradient_accumulation
from tg_train.pipeline import load_pipeline, stage_recipe
from tg_train.recipe import RecipeError, load_recipe, parse_override, shipped_recipes


def _write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = """
stage = "2"
[model]
preset = "tiny"
[[data]]
path = "{data}"
"""


@pytest.fixture
def minimal(tmp_path: Path, shapes_world: Path) -> str:
    return MINIMAL.format(data=shapes_world / "train.parquet")


# errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("top", "table", "field", "hint"),
    [
        ("lrr_top = 1\n", "", "'lrr_top'", "optim"),  # a top-level key
        ("", "[optim]\nlrr = 1e-3\n", "optim.'lrr'", "lr"),  # a key in a table
        ("", "[batch]\nglobl = 8\n", "batch.'globl'", "global"),  # the alias is what the user sees
    ],
)
def test_unknown_key_names_file_field_and_valid_keys(
    tmp_path: Path, minimal: str, top: str, table: str, field: str, hint: str
):
    path = _write(tmp_path, top + minimal + table)
    with pytest.raises(RecipeError) as e:
        load_recipe(str(path))
    message = str(e.value)
    assert str(path) in message
    assert f"unknown key {field}" in message
    assert hint in message.split("valid keys here: ")[1].split(", ")


def test_unknown_key_inside_a_data_source(tmp_path: Path, minimal: str):
    path = _write(tmp_path, minimal + 'tasks = ["rec"]\nweigth = 2\n')
    with pytest.raises(RecipeError, match=r"unknown key data\[0\]\.'weigth'.*weight"):
        load_recipe(str(path))


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[batch]\nmicro = "four"\n', r"batch\.micro: expected int, got str 'four'"),
        ("[batch]\nmicro = true\n", r"batch\.micro: expected int, got bool"),  # a bool is not an int
        ('[optim]\nlr = "fast"\n', r"optim\.lr: expected float"),
        ("[train]\nllm = 1\n", r"train\.llm: expected bool, got int"),
        ('[optim]\nbetas = [0.9, "x"]\n', r"optim\.betas\[1\]: expected float"),
        ("[[data]]\npath = 3\n", r"data\[1\]\.path: expected str, got int"),
    ],
)
def test_wrong_types_name_the_field(tmp_path: Path, minimal: str, table: str, expected: str):
    path = _write(tmp_path, minimal + table)
    with pytest.raises(RecipeError, match=expected) as e:
        load_recipe(str(path))
    assert str(path) in str(e.value)


def test_a_table_given_as_a_value(tmp_path: Path, shapes_world: Path):
    path = _write(tmp_path, f'model = "tiny"\n[[data]]\npath = "{shapes_world / "train.parquet"}"\n')
    with pytest.raises(RecipeError, match=r"model: expected a table \[model\], got 'tiny'"):
        load_recipe(str(path))


def test_encoder_weights_must_be_local_files(tmp_path: Path):
    """Towers load only local checkpoints: a directory or a URL is named before anything starts."""
    weights = tmp_path / "tower-0.safetensors"
    weights.write_bytes(b"")
    listed = [str(weights), str(tmp_path), "https://example.org/tower.safetensors"]
    path = _write(
        tmp_path, f'stage = "1a"\n[model]\npreset = "tiny"\nencoder_weights = {json.dumps(listed)}\n'
        f'[[data]]\npath = "{weights}"\n',
    )
    with pytest.raises(RecipeError) as e:
        load_recipe(str(path))
    message = str(e.value)
    assert "encoder_weights[0]" not in message
    assert f"model.encoder_weights[1] {str(tmp_path)!r} is not a file" in message
    assert "model.encoder_weights[2] 'https://example.org/tower.safetensors' is not a file" in message


def test_missing_files_are_all_named_in_one_error(tmp_path: Path):
    path = _write(
        tmp_path,
        'stage = "3"\n[model]\ninit = "nowhere/export"\n[deepspeed]\nconfig = "nowhere/ds.json"\n'
        '[[data]]\npath = "nowhere/train.parquet"\n',
    )
    with pytest.raises(RecipeError) as e:
        load_recipe(str(path))
    message = str(e.value)
    assert message.startswith(str(path))
    assert "model.init 'nowhere/export' is not a tg-model export" in message
    assert "deepspeed.config 'nowhere/ds.json' does not exist" in message
    assert "data[0].path 'nowhere/train.parquet' does not exist" in message
    # without the file checks the same recipe is fine (a pipeline fills these in later)
    assert load_recipe(str(path), check_files=False).model.init == "nowhere/export"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[train]\nencoder = true\n", "encoders are frozen"),
        ("[train]\nllm = false\nprojector = false\n", "trains nothing"),
        ("[batch]\nglobal = 10\nmicro = 4\n", r"batch.global \(10\) must be a positive multiple of batch.micro \(4\)"),
        ('[optim]\nscheduler = "step"\n', "optim.scheduler must be cosine, linear or constant"),
        ("[checkpoint]\nevery_steps = 0\n", "checkpoint.every_steps and logging.every_steps must be positive"),
        ('[precision]\nbf16 = "yes"\n', "precision.bf16 must be"),
        ("[batch]\nfeature_cache_mb = -1\n", r"batch.image_cache_mb and batch.feature_cache_mb must be >= 0 \(0: off\)"),
    ],
)
def test_invalid_values(tmp_path: Path, minimal: str, extra: str, expected: str):
    with pytest.raises(RecipeError, match=expected):
        load_recipe(str(_write(tmp_path, minimal + extra)))


def test_preset_and_init_are_exclusive(tmp_path: Path, minimal: str):
    text = minimal.replace('preset = "tiny"', 'preset = "tiny"\ninit = "x"')
    with pytest.raises(RecipeError, match="exactly one of preset"):
        load_recipe(str(_write(tmp_path, text)), check_files=False)


def test_bad_toml_and_unknown_recipe_name(tmp_path: Path):
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(str(_write(tmp_path, "stage = \n")))
    with pytest.raises(RecipeError, match=r"neither a file nor a shipped recipe; shipped: .*stage2"):
        load_recipe("no-such-recipe")


# --set ----------------------------------------------------------------------------------------
def test_overrides_nested_list_index_and_toml_values(tmp_path: Path, minimal: str):
    data = load_path(minimal)
    path = _write(tmp_path, minimal + f'[[data]]\npath = "{data}"\n[optim]\nbetas = [0.9, 0.999]\n')
    r = load_recipe(
        str(path),
        [
            "optim.lr=1e-4",  # float
            "batch.packing=true",  # bool
            "batch.micro=2",  # int
            "name=my run",  # a bare string
            "data.1.weight=0.25",  # an index into a list of tables
            "data.0.tasks=[\"rec\", \"reg\"]",  # a TOML array
            "optim.betas.1=0.95",  # an index into a list of values
            "model.overrides={text_num_hidden_layers = 1}",  # an inline table
            "checkpoint.resume=never",
        ],
    )
    assert r.optim.lr == 1e-4 and isinstance(r.optim.lr, float)
    assert r.batch.packing is True
    assert r.batch.micro == 2
    assert r.name == "my run"
    assert r.data[1].weight == 0.25 and r.data[0].weight == 0.0
    assert r.data[0].tasks == ["rec", "reg"]
    assert r.optim.betas == [0.9, 0.95]
    assert r.model.overrides == {"text_num_hidden_layers": 1}
    assert r.checkpoint.resume == "never"


def load_path(minimal: str) -> str:
    return minimal.split('path = "')[1].split('"')[0]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("optim.lrr=1", r"unknown key optim\.'lrr'"),
        ("optim.lr=fast", r"optim\.lr: expected float, got str 'fast'"),
        ("data.5.weight=1", r"data has 1 entries; use an index"),
        ("optim.betas.1=0.9", r"optim\.betas is not in the recipe file.*--set optim\.betas=\[\.\.\.\]"),
        ("stage.x=1", r"stage is not a table"),
        ("optim.lr", r"expected key=value"),
    ],
)
def test_bad_overrides(tmp_path: Path, minimal: str, item: str, expected: str):
    with pytest.raises(RecipeError, match=expected):
        load_recipe(str(_write(tmp_path, minimal)), [item])


def test_parse_override_keeps_toml_types():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=3.5") == ("a", 3.5)
    assert parse_override("a=false") == ("a", False)
    assert parse_override("a=runs/x") == ("a", "runs/x")
    assert parse_override('a="007"') == ("a", "007")
    assert parse_override("a=x=y") == ("a", "x=y")


def test_global_alias_round_trips(tmp_path: Path, minimal: str):
    r = load_recipe(str(_write(tmp_path, minimal + "[batch]\nglobal = 64\nmicro = 8\n")))
    assert r.batch.global_size == 64
    d = r.to_dict()
    assert d["batch"]["global"] == 64 and "global_size" not in d["batch"]
    # the dict form is itself a valid recipe
    again = load_recipe(str(_write(tmp_path, tomli_w.dumps(d), "again.toml")))
    assert again.to_dict() == d


# shipped recipes ----------------------------------------------------------------------------
PAPER = {  # Table 6 of the paper
    "stage1a": {"stage": "1a", "llm": False, "global": 32, "lr": 1e-3, "epochs": 1.0},
    "stage1b": {"stage": "1b", "llm": True, "global": 32, "lr": 2e-5, "epochs": 1.0},
    "stage2": {"stage": "2", "llm": True, "global": 32, "lr": 2e-5, "epochs": 1.0},
    "stage3": {"stage": "3", "llm": True, "global": 16, "lr": 2e-5, "epochs": 2.0},
}


def test_every_shipped_recipe_and_pipeline_loads():
    shipped = shipped_recipes()
    assert {"stage1a", "stage1b", "stage2", "stage3", "quickstart", "paper"} <= set(shipped)
    for name, path in shipped.items():
        text = path.read_text()
        if "[[stages]]" in text:
            pipeline = load_pipeline(name)
            for i in range(len(pipeline.stages)):
                r = stage_recipe(pipeline, i, check_files=False)
                assert r.output_dir == str(pipeline.stage_dir(i))
        else:
            r = load_recipe(name, check_files=False)
            assert r.description, f"{name} has no description for `tg-train recipes`"


def test_quickstart_builds_its_narrow_llm():
    # the first stage's overrides give the LLM the width the quickstart's figures were measured with
    import dataclasses

    from tg_train.trainer import load_model

    section = stage_recipe(load_pipeline("quickstart"), 0, check_files=False).model
    model, _ = load_model(dataclasses.replace(section, encoder_weights=[]), seed=0)
    text = model.config.text_config
    assert (text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads) == (128, 256, 4, 1)
    assert model.get_input_embeddings().weight.shape[1] == 128
    assert model.projector.linear_2.out_features == 128
    assert model.config.spatial_merge_size == 2 and model.image_tokens == model.encoder.num_patches // 4


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipes_carry_table6(name: str):
    want = PAPER[name]
    r = load_recipe(name, check_files=False)
    assert r.stage == want["stage"]
    assert (r.train.projector, r.train.llm, r.train.encoder) == (True, want["llm"], False)
    assert r.batch.global_size == want["global"]
    assert r.optim.lr == want["lr"] and r.optim.epochs == want["epochs"] and r.optim.max_steps == 0
    assert (r.optim.scheduler, r.optim.warmup_ratio, r.optim.weight_decay) == ("cosine", 0.03, 0.0)
    assert r.precision.bf16 == "true" and r.precision.tf32 is True
    assert r.deepspeed.zero_stage == 2
    assert r.model.gradient_checkpointing is True
    if name == "stage1a":
        assert r.model.preset.startswith("tgpt-")
    else:
        assert r.model.init.endswith("/export")


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipes_without_data_name_the_missing_file(name: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of the data (or the previous stage) is here
    with pytest.raises(RecipeError) as e:
        load_recipe(name)
    first = load_recipe(name, check_files=False).data[0].path
    assert f"data[0].path {first!r} does not exist" in str(e.value)


def test_paper_pipeline_chains_the_four_stages():
    pipeline = load_pipeline("paper")
    stages = [stage_recipe(pipeline, i, check_files=False) for i in range(4)]
    assert [s.stage for s in stages] == ["1a", "1b", "2", "3"]
    assert stages[0].model.preset and not stages[0].model.init
    for prev, nxt in itertools.pairwise(stages):
        assert nxt.model.init == str(Path(prev.output_dir) / "export") and not nxt.model.preset


# DeepSpeed config ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "world", "micro", "accum"), [("stage2", 8, 4, 1), ("stage2", 2, 4, 4), ("stage3", 8, 2, 1)])
def test_deepspeed_config_of_paper_recipes(name: str, world: int, micro: int, accum: int):
    r = load_recipe(name, check_files=False)
    c = deepspeed_config(r, world, bf16=True)
    assert c["train_batch_size"] == r.batch.global_size == world * micro * accum
    assert (c["train_micro_batch_size_per_gpu"], c["gradient_accumulation_steps"]) == (micro, accum)
    assert c["zero_optimization"]["stage"] == 2
    assert c["bf16"] == {"enabled": True} and c["fp16"] == {"enabled": False}
    assert c["gradient_clipping"] == 1.0


def test_batch_that_does_not_split_over_ranks():
    r = load_recipe("stage2", check_files=False)
    with pytest.raises(RecipeError, match=r"must be a multiple of batch.micro x ranks \(4 x 3\)"):
        gradient_accumulation(r, 3)


def test_user_deepspeed_json_is_taken_as_is_but_must_agree(tmp_path: Path, minimal: str):
    ds = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 1, "custom": 5}, "x": 1}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    r = load_recipe(str(_write(tmp_path, minimal + f'[deepspeed]\nconfig = "{tmp_path / "ds.json"}"\n')))
    c = deepspeed_config(r, 1, bf16=False)
    assert c["zero_optimization"] == {"stage": 1, "custom": 5} and c["x"] == 1
    assert (c["train_batch_size"], c["gradient_accumulation_steps"]) == (32, 8)  # filled in from [batch]
    (tmp_path / "ds.json").write_text(json.dumps({**ds, "train_micro_batch_size_per_gpu": 8}))
    with pytest.raises(RecipeError, match="disagree with the recipe's"):
        deepspeed_config(r, 1, bf16=False)
