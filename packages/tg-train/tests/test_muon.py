"""Muon (``optim.name = "muon"``): which parameters it takes, at what learning rate, and what a step does."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tg_model.presets import build_model
from tg_train.engine import deepspeed_config
from tg_train.recipe import RecipeError, load_recipe
from tg_train.trainer import train

MUON = {"name": "muon", "lr": 1e-3, "muon_lr": 0.05, "max_steps": 1, "warmup_ratio": 0.0}


def test_the_deepspeed_config_carries_the_muon_block(make_recipe):
    recipe = load_recipe(str(make_recipe(optim=MUON)))
    block = deepspeed_config(recipe, 1, bf16=False)["optimizer"]
    assert block["type"] == "Muon"
    assert block["params"]["muon_lr"] == 0.05 and block["params"]["adam_lr"] == block["params"]["lr"] == 1e-3
    assert block["params"]["ns_method"] == "gram"
    assert "optimizer" not in deepspeed_config(load_recipe(str(make_recipe("adamw"))), 1, bf16=False)


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ({"optim": {"name": "lion"}}, "optim.name must be one of ['adamw', 'muon']"),
        ({"optim": {**MUON, "muon_lr": 0.0}}, "optim.muon_lr must be positive"),
        ({"optim": {**MUON, "muon_ns_method": "fast"}}, "optim.muon_ns_method must be 'gram' or 'standard'"),
        ({"optim": MUON, "train": {"projector_lr": 1e-3}}, "train.projector_lr is an AdamW setting"),
    ],
)
def test_muon_settings_are_checked(make_recipe, sections, needle: str):
    with pytest.raises(RecipeError, match=re.escape(needle)):
        load_recipe(str(make_recipe(**sections)))


def test_muon_beside_a_users_deepspeed_json_is_refused(make_recipe, tmp_path: Path):
    user = tmp_path / "ds.json"
    user.write_text("{}")
    with pytest.raises(RecipeError, match="put a Muon optimizer block in that JSON"):
        load_recipe(str(make_recipe(optim=MUON, deepspeed={"config": str(user)})))


def _one_step_spectra(make_recipe, small_llm, **optim) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """After one Muon step from the recipe's initial weights: each LLM/projector matrix's update singular
    values over muon_lr * sqrt(max(1, rows / cols)), and how far each token embedding entry moved."""
    recipe = load_recipe(str(make_recipe(optim={**MUON, **optim})))
    out = train(recipe)
    before, _ = build_model("tiny", seed=recipe.seed, **small_llm)
    after = AutoModelForCausalLM.from_pretrained(out.export_dir)
    old, new = dict(before.named_parameters()), dict(after.named_parameters())
    spectra = {}
    for name, p in old.items():
        if p.ndim == 2 and (name.startswith("projector.") or ".layers." in name):
            delta = (new[name] - p).detach().double()
            rows, cols = delta.shape
            spectra[name] = torch.linalg.svdvals(delta) / (MUON["muon_lr"] * max(1.0, rows / cols) ** 0.5)
    embed = next(n for n in old if "embed_tokens" in n)
    return spectra, (new[embed] - old[embed]).detach().abs()


def test_a_muon_step_orthogonalises_the_matrices_and_steps_the_rest_with_adam(make_recipe, small_llm):
    """Each matrix moves by muon_lr times an (approximately) orthogonal matrix; the embeddings by Adam's
    first step. Clipping off: DeepSpeed clips Muon's orthogonalised updates with the rest (next test)."""
    spectra, moved = _one_step_spectra(make_recipe, small_llm, grad_clip=0.0)
    assert spectra
    for name, s in spectra.items():
        # its largest singular values near 1 (five Newton-Schulz iterations leave them in about 0.7-1.2);
        # Adam's first step, lr * sign(gradient), would give sqrt(rows * cols) / 2 or more, and the
        # gradient's own spectrum falls off fast; a tiny batch leaves its smallest directions near zero
        top = s[: s.numel() // 4]
        assert 0.7 < top.max() < 1.5 and top.median() > 0.5, (name, top)
    moved = moved[moved > 0]  # Adam's first step is lr * g / (|g| + eps): lr, or less where g is near eps
    assert moved.max() < 1e-3 * 1.001 and abs(moved.median().item() - 1e-3) < 2e-5


def test_gradient_clipping_shrinks_every_muon_update_alike(make_recipe, small_llm):
    """DeepSpeed computes the global norm after orthogonalising, so with grad_clip = 1 every matrix's
    step shrinks by the same factor, clip / (norm of all updates): muon_lr is tuned with the clip on."""
    spectra, _ = _one_step_spectra(make_recipe, small_llm, grad_clip=1.0)
    tops = torch.stack([s.max() for s in spectra.values()])
    assert tops.max() < 0.5  # the norm of all orthogonal updates is far above 1
    assert tops.max() / tops.min() < 2.0  # one factor for all (Newton-Schulz spreads them a little)


def test_a_muon_run_resumed_from_a_checkpoint_ends_with_the_same_weights(make_recipe, tmp_path: Path, capsys):
    """Muon's momentum lives in DeepSpeed's ZeRO optimiser state: a run taken back to its step-3 checkpoint
    and resumed must end bit-identical to the uninterrupted run (a momentum restarted at zero would not)."""
    sections = {"optim": {**MUON, "max_steps": 6, "warmup_ratio": 0.2}, "checkpoint": {"every_steps": 1, "keep_last": 0}}
    recipe = load_recipe(str(make_recipe("muon", **sections)))
    out = Path(recipe.output_dir)
    train(recipe)
    reference = load_file(out / "export" / "model.safetensors")
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(out, resumed_dir)
    for later in ("step-4", "step-5", "step-6"):
        shutil.rmtree(resumed_dir / "checkpoints" / later)
    shutil.rmtree(resumed_dir / "export")
    capsys.readouterr()
    result = train(load_recipe(str(make_recipe("muon", output_dir=resumed_dir, **sections))))
    assert result.global_step == 6
    log = " ".join(capsys.readouterr().err.split())
    assert "resumed from" in log and "step-3 at step 3" in log  # from the checkpoint, not trained afresh
    resumed = load_file(resumed_dir / "export" / "model.safetensors")
    assert [k for k in reference if not reference[k].equal(resumed[k])] == []
