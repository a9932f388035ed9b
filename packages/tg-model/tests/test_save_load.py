"""save_pretrained / from_pretrained: one self-contained safetensors directory, loaded offline, same logits."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from tg_model.inputs import collate
from tg_model.modeling import TinyGroundingGPTForCausalLM
from tg_model.presets import build_model


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network access attempted: {args[1:]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, shapes, sample_encoder_for):
    """A tiny model whose every weight was moved away from its initialisation, saved with its tokenizer."""
    model, tokenizer = build_model("tiny", seed=0)
    model.eval()
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    directory = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    encoder = sample_encoder_for(model, tokenizer)
    batch = collate([encoder.encode(shapes.by_task(t), image=shapes.image) for t in ("caption", "coord2obj")],
                    tokenizer.pad_token_id)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "object_pixel_values")}
    with torch.no_grad():
        logits = model(**inputs).logits
    return directory, model, tokenizer, inputs, logits


def test_the_directory_holds_every_weight_in_safetensors(saved):
    directory, model, _, _, _ = saved
    files = sorted(p.name for p in directory.iterdir())
    assert "model.safetensors" in files and "config.json" in files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    with safe_open(directory / "model.safetensors", "pt") as f:
        stored = set(f.keys())
    expected = {name for name, _ in model.named_parameters()}
    tied = {"language_model.lm_head.weight"} if model.config.tie_word_embeddings else set()
    assert expected - tied <= stored
    assert any(k.startswith("encoder.towers.0.") for k in stored) and any(k.startswith("encoder.towers.1.") for k in stored)
    config = json.loads((directory / "config.json").read_text())
    assert all(spec["pretrained"] is None for spec in config["encoder_specs"])  # nothing to fetch on load


@pytest.mark.parametrize("loader", [TinyGroundingGPTForCausalLM, AutoModelForCausalLM], ids=["class", "auto"])
def test_reloading_offline_gives_identical_logits(saved, no_network, loader):
    directory, model, _, inputs, logits = saved
    loaded = loader.from_pretrained(directory).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, logits)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    if model.config.tie_word_embeddings:
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


def test_generation_settings_and_tokenizer_come_back(saved, no_network):
    directory, model, tokenizer, _, _ = saved
    loaded = TinyGroundingGPTForCausalLM.from_pretrained(directory)
    for key in ("eos_token_id", "pad_token_id", "suppress_tokens"):
        assert getattr(loaded.generation_config, key) == getattr(model.generation_config, key), key
    reloaded = AutoTokenizer.from_pretrained(directory)
    text = "<image>\nWhere is the red circle? [0.125,0.5,0.75,0.875]<|im_end|>"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert len(reloaded) == len(tokenizer) == loaded.config.vocab_size
    assert reloaded.convert_tokens_to_ids("<object>") == loaded.config.object_token_id


def test_a_fresh_model_from_the_saved_config_does_not_match_the_saved_weights(saved):
    """The reload test compares real weights: rebuilding from the config alone gives other logits."""
    directory, _, _, inputs, logits = saved
    fresh = TinyGroundingGPTForCausalLM(TinyGroundingGPTForCausalLM.config_class.from_pretrained(directory)).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(**inputs).logits, logits)
