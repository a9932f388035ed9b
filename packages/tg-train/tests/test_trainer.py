"""One stage in-process: freezing per stage, the export, metrics and the loss curve, packing in training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tg_data.io import read_samples
from tg_model.inputs import SampleEncoder, collate
from tg_model.presets import build_model
from tg_train.data import pack_rows, plan_epoch
from tg_train.engine import lr_lambda, param_groups
from tg_train.metrics import read_metrics
from tg_train.recipe import load_recipe
from tg_train.trainer import compile_decoder, load_model, train

STEPS = 3


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory: pytest.TempPathFactory, recipe_file):
    """Stage 1a (projector only) and stage 2 (LLM + projector), a few steps each from the same fresh model.

    Stage 1a checkpoints the frozen LLM's activations, as the paper recipes do: the projector's
    gradient must still flow back through it.
    """
    d = tmp_path_factory.mktemp("stages")
    runs = {}
    for stage, llm in (("1a", False), ("2", True)):
        recipe = load_recipe(str(recipe_file(
            d, f"stage{stage}", stage=stage, train={"projector": True, "llm": llm},
            optim={"max_steps": STEPS, "warmup_ratio": 0.34},
            model={"gradient_checkpointing": not llm},
        )))
        runs[stage] = (recipe, train(recipe))
    return runs


@pytest.fixture(scope="module")
def initial(small_llm):
    model, _ = build_model("tiny", seed=7, **small_llm)  # the recipes' seed: what training started from
    return model


@pytest.mark.parametrize("stage", ["1a", "2"])
def test_trainable_parameters_per_stage(stage_runs, initial, stage: str):
    _, result = stage_runs[stage]
    assert result.trainable["encoder"] == 0
    assert result.trainable["projector"] == _numel(initial.projector)
    assert result.trainable["llm"] == (_numel(initial.language_model) if stage == "2" else 0)


@pytest.mark.parametrize("stage", ["1a", "2"])
def test_frozen_parts_never_change(stage_runs, initial, stage: str):
    _, result = stage_runs[stage]
    trained = AutoModelForCausalLM.from_pretrained(result.export_dir)
    assert _same(trained.encoder, initial.encoder), "the encoders are frozen in every stage"
    assert not _same(trained.projector, initial.projector)
    assert _same(trained.language_model, initial.language_model) == (stage == "1a")


def test_param_groups_give_the_projector_its_own_lr(tmp_path: Path, make_recipe, initial):
    recipe = load_recipe(str(make_recipe(train={"projector_lr": 5e-3}, optim={"weight_decay": 0.1})))
    groups = {g["name"]: g for g in param_groups(initial, recipe)}
    assert set(groups) == {"projector", "projector_no_decay", "llm", "llm_no_decay"}
    assert groups["projector"]["lr"] == groups["projector_no_decay"]["lr"] == 5e-3
    assert groups["llm"]["lr"] == groups["llm_no_decay"]["lr"] == recipe.optim.lr
    assert groups["llm"]["weight_decay"] == 0.1 and groups["llm_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups["llm"]["params"])  # no decay on biases and norms
    assert all(p.ndim < 2 for p in groups["llm_no_decay"]["params"])
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == _numel(initial.projector) + _numel(
        initial.language_model
    )


def test_export_loads_with_from_pretrained_and_gives_the_trained_logits(stage_runs, small_llm, shapes_world: Path):
    _, result = stage_runs["2"]
    export = result.export_dir
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in export.iterdir()}
    loaded = AutoModelForCausalLM.from_pretrained(export).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    # the weights DeepSpeed trained, from the final checkpoint, in a freshly built model
    state = torch.load(export.parent / "checkpoints" / f"step-{STEPS}" / "state" / "mp_rank_00_model_states.pt",
                       map_location="cpu", weights_only=False)["module"]
    reference, ref_tokenizer = build_model("tiny", seed=0, **small_llm)
    reference.load_state_dict(state)
    reference.eval()
    samples = list(read_samples(str(shapes_world / "test.parquet")))[:4]
    logits = []
    for model, tok in ((loaded, tokenizer), (reference, ref_tokenizer)):
        encoder = SampleEncoder(tok, model.config, model.encoder.image_size, model.image_tokens,
                                image_root=str(shapes_world))
        batch = collate([encoder.encode(s) for s in samples], tok.pad_token_id)
        batch.pop("sample_ids")
        with torch.no_grad():
            logits.append(model(**batch).logits)
    assert torch.equal(logits[0], logits[1])
    assert tokenizer("<image> [0.125,0.500,0.750,1.000]")["input_ids"] == ref_tokenizer(
        "<image> [0.125,0.500,0.750,1.000]"
    )["input_ids"]


def test_metrics_lines_follow_the_schedule_and_the_loss_curve_is_drawn(stage_runs):
    recipe, result = stage_runs["2"]
    out = Path(recipe.output_dir)
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    warmup = math.ceil(recipe.optim.warmup_ratio * STEPS)
    for r in records:
        assert {"stage", "step", "epoch", "loss", "lr", "tokens_per_s", "samples", "time"} <= set(r)
        assert math.isfinite(r["loss"]) and r["tokens_per_s"] > 0
        # the lr logged after step k is the one step k + 1 will use
        expected = recipe.optim.lr * lr_lambda(r["step"], STEPS, warmup, "cosine", 0.0)
        assert r["lr"] == pytest.approx(expected, rel=1e-6)
        assert r["samples"] == r["step"] * recipe.batch.global_size
    assert result.final_loss == records[-1]["loss"]
    png = (out / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert json.loads((out / "recipe.json").read_text()) == recipe.to_dict()


def test_packed_training_follows_padded_training(make_recipe, tmp_path: Path, capsys):
    """Packing changes the layout, not the maths: same samples per micro-batch, same token-mean loss."""
    losses, weights = {}, {}
    for packing in (False, True):
        # random micro-batches (no length sorting), so short samples find room beside longer ones
        batch = {"packing": packing, "max_length": 400, "group_by_length": False}
        recipe = load_recipe(str(make_recipe(f"packing-{packing}", batch=batch)))
        result = train(recipe)
        losses[packing] = [r["loss"] for r in read_metrics(Path(recipe.output_dir) / "metrics.jsonl")]
        weights[packing] = AutoModelForCausalLM.from_pretrained(result.export_dir).state_dict()
    assert len(losses[True]) == 4
    # fp32 on CPU: the layouts differ only in summation order inside attention and the loss
    assert losses[True] == pytest.approx(losses[False], abs=2e-4)
    assert max((weights[True][k] - weights[False][k]).abs().max().item() for k in weights[True]) < 1e-3
    # and packing did pack: the trainer's first micro-batches, encoded as it encodes them
    model, tokenizer = load_model(recipe.model, recipe.seed)
    samples = list(read_samples(recipe.data[0].path))
    encoder = SampleEncoder(tokenizer, model.config, model.encoder.image_size, model.image_tokens,
                            image_root=str(Path(recipe.data[0].path).parent), max_length=400)
    plan = plan_epoch([0] * len(samples), [True] * len(samples), 4, 2, recipe.seed, 0, False)
    rows = [len(pack_rows(lengths, max(lengths))) for lengths in
            ([encoder.encode(samples[i]).length for i in b] for b in plan[:8])]
    assert sum(rows) < 8 * 4, rows
    err = " ".join(capsys.readouterr().err.split())
    assert "trainable parameters: encoder 0, projector" in err and ", llm " in err


def test_pixel_and_feature_caches_change_nothing_but_the_work(make_recipe, capsys):
    """Remembered pixels and frozen-tower features train the same model as decoding and encoding afresh."""
    losses, weights = {}, {}
    for cached in (False, True):
        mb = 64.0 if cached else 0.0
        recipe = load_recipe(str(make_recipe(f"cache-{cached}", batch={"image_cache_mb": mb, "feature_cache_mb": mb})))
        result = train(recipe)
        losses[cached] = [r["loss"] for r in read_metrics(Path(recipe.output_dir) / "metrics.jsonl")]
        weights[cached] = AutoModelForCausalLM.from_pretrained(result.export_dir).state_dict()
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    assert max((weights[True][k] - weights[False][k]).abs().max().item() for k in weights[True]) < 1e-5
    # 4 steps of 8 samples drawn from 8 scenes: most images come back, and the cache answered them
    line = " ".join(capsys.readouterr().err.split()).split("feature cache: ")[1]
    hits, total = (int(w) for w in line.split()[:3:2])
    assert total >= 4 * 8 and hits > total // 2, line


def test_a_compiled_decoder_trains_the_same_model(make_recipe):
    """``model.compile`` fuses kernels in place: the same losses, and an export with the same names."""
    from torch._dynamo.utils import counters

    losses, weights = {}, {}
    for compiled in (False, True):
        counters.clear()
        recipe = load_recipe(str(make_recipe(f"compile-{compiled}", model={"compile": compiled})))
        result = train(recipe)
        losses[compiled] = [r["loss"] for r in read_metrics(Path(recipe.output_dir) / "metrics.jsonl")]
        weights[compiled] = AutoModelForCausalLM.from_pretrained(result.export_dir).state_dict()
        assert (counters["stats"]["unique_graphs"] > 0) == compiled
    assert weights[True].keys() == weights[False].keys()
    # fp32 on CPU: fused kernels only reorder sums
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)
    assert max((weights[True][k] - weights[False][k]).abs().max().item() for k in weights[True]) < 1e-4


def test_without_a_cxx_compiler_the_decoder_runs_eagerly_and_says_so(small_llm, tmp_path: Path, monkeypatch):
    model, _ = build_model("tiny", seed=0, **small_llm)
    decoder = model.language_model.get_decoder()
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on it
    line = compile_decoder(model)
    assert "no C++ compiler found" in line and "eagerly" in line
    assert getattr(decoder, "_compiled_call_impl", None) is None
    fake = tmp_path / "g++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert "g++" in compile_decoder(model)
    assert decoder._compiled_call_impl is not None
