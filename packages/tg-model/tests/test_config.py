"""The configuration: JSON round trip, the LLM's sub-config, validation, Auto-class registration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config

from tg_model.configuration import MODEL_TYPE, TinyGroundingGPTConfig
from tg_model.modeling import TinyGroundingGPTForCausalLM
from tg_model.presets import build_model


def test_config_round_trips_through_json_with_a_qwen2_text_config(tiny, tmp_path):
    config = tiny[0].config
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == MODEL_TYPE
    assert saved["text_config"]["model_type"] == "qwen2"

    loaded = TinyGroundingGPTConfig.from_pretrained(tmp_path)
    assert isinstance(loaded.text_config, Qwen2Config)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.encoder_specs == config.encoder_specs
    assert (loaded.hidden_size, loaded.vocab_size) == (config.text_config.hidden_size, config.text_config.vocab_size)
    for field in ("object_grid", "object_margin", "image_token_id", "object_token_id", "context_length"):
        assert getattr(loaded, field) == getattr(config, field)


def test_config_takes_the_text_config_as_a_dict_and_inherits_tied_embeddings():
    config = TinyGroundingGPTConfig(
        text_config={"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "intermediate_size": 64, "vocab_size": 50, "tie_word_embeddings": True},
        object_grid=3,
    )
    assert isinstance(config.text_config, Qwen2Config)
    assert (config.hidden_size, config.vocab_size, config.object_grid) == (32, 50, 3)
    assert config.tie_word_embeddings is True
    assert config.encoder_specs == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("object_grid", 0, "object_grid must be >= 1"),
        ("object_grid", -3, "object_grid must be >= 1"),
        ("object_margin", -0.1, r"object_margin must be in \[0, 10\]"),
        ("object_margin", 11.0, r"object_margin must be in \[0, 10\]"),
        ("image_placement", "first", "image_placement must be one of as_written, before_text, after_text; got 'first'"),
    ],
)
def test_invalid_media_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        TinyGroundingGPTConfig(**{field: value})


def test_auto_classes_load_a_saved_directory(tiny, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), TinyGroundingGPTConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, TinyGroundingGPTForCausalLM)


def test_importing_the_model_module_registers_the_auto_classes_offline(tmp_path):
    """A fresh interpreter that only imports ``tg_model.modeling`` loads a saved directory through the
    Auto classes, with the hub switched off (a network access would raise)."""
    model, tokenizer = build_model("tiny", seed=5)
    model.eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    input_ids = torch.tensor([tokenizer("a red circle")["input_ids"]])
    with torch.no_grad():
        torch.save({"input_ids": input_ids, "logits": model(input_ids=input_ids).logits}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        import tg_model.modeling
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "model")!r}).eval()
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path / "model")!r})
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert type(model).__name__ == "TinyGroundingGPTForCausalLM", type(model)
        assert tokenizer("a red circle")["input_ids"] == expected["input_ids"][0].tolist()
        with torch.no_grad():
            assert torch.equal(model(input_ids=expected["input_ids"]).logits, expected["logits"])
        print("loaded")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded" in result.stdout
