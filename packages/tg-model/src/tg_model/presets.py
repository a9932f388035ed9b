"""Named model presets: ``tiny`` for CPUs and tests, ``tgpt-1.5b`` / ``3b`` / ``7b`` for real use.

Real presets pair CLIP ViT-L/14-336 + DINOv2-L/14 with Qwen2.5-Instruct. Their architectures are
written out here, so they can be built offline (on the ``meta`` device, say) to check dims and
parameter counts; their weights come from a hub name or a local path at build time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tg_encoders.encoder import build_encoder, real_encoder_specs, tiny_encoder_specs
from tg_model.configuration import TinyGroundingGPTConfig
from tg_model.modeling import TinyGroundingGPTForCausalLM, register_auto_classes
from tg_model.tokenizer import IM_END, MEDIA_TOKENS, add_media_tokens

QWEN_SYSTEM_PROMPT = "You are a helpful assistant."


def _qwen25(hidden: int, layers: int, heads: int, kv: int, inter: int, vocab: int, tie: bool) -> dict[str, Any]:
    return {
        "model_type": "qwen2",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "tie_word_embeddings": tie,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "hidden_act": "silu",
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    }


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    text_config: dict[str, Any]
    encoder: dict[str, Any] = field(default_factory=dict)  # kwargs of the encoder-spec builder
    llm: str | None = None  # hub name of the pretrained LLM and tokenizer; None: random init, tiny tokenizer
    object_grid: int = 12
    system_prompt: str | None = QWEN_SYSTEM_PROMPT
    context_length: int = 2048

    @property
    def is_real(self) -> bool:
        return self.llm is not None

    def encoder_specs(self, **overrides: Any) -> list[dict[str, Any]]:
        """The towers' specs; ``overrides`` replace the preset's spec-builder arguments."""
        args = {**self.encoder, **overrides}
        return real_encoder_specs(**args) if self.is_real else tiny_encoder_specs(**args)


TINY_TEXT = {
    "model_type": "qwen2",
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 0,  # set from the tokenizer
    "tie_word_embeddings": True,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "hidden_act": "silu",
}

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny",
        "random init, small dims, a locally built tokenizer: CPUs, tests and the shapes world",
        TINY_TEXT,
        encoder={"image_size": 64, "patch_size": 8, "width": 64, "depth": 2, "heads": 2, "pos_embed": "sincos"},
        object_grid=2,
        system_prompt=None,
        context_length=512,
    ),
    "tgpt-1.5b": Preset(
        "tgpt-1.5b",
        "CLIP ViT-L/14-336 + DINOv2-L/14 + Qwen2.5-1.5B-Instruct",
        _qwen25(1536, 28, 12, 2, 8960, 151936, tie=True),
        llm="Qwen/Qwen2.5-1.5B-Instruct",
    ),
    "tgpt-3b": Preset(
        "tgpt-3b",
        "CLIP ViT-L/14-336 + DINOv2-L/14 + Qwen2.5-3B-Instruct",
        _qwen25(2048, 36, 16, 2, 11008, 151936, tie=True),
        llm="Qwen/Qwen2.5-3B-Instruct",
    ),
    "tgpt-7b": Preset(
        "tgpt-7b",
        "CLIP ViT-L/14-336 + DINOv2-L/14 + Qwen2.5-7B-Instruct (the paper's ablation size)",
        _qwen25(3584, 28, 28, 4, 18944, 152064, tie=False),
        llm="Qwen/Qwen2.5-7B-Instruct",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny preset's tokenizer, shipped as a file (regenerate with ``tokenizer.train_tiny_tokenizer``)."""
    path = resources.files("tg_model") / "assets" / "tiny_tokenizer.json"
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(path), eos_token=IM_END, pad_token="<|endoftext|>",
        additional_special_tokens=list(MEDIA_TOKENS),
    )
    tok.padding_side = "right"
    return tok


def _check_override_names(
    preset: str, text_overrides: dict[str, Any], config_overrides: dict[str, Any], model_type: str
) -> None:
    """Configs take unknown keyword arguments silently; a misspelt override must not vanish."""
    from transformers import CONFIG_MAPPING

    text_fields = set(CONFIG_MAPPING[model_type]().to_dict())
    config_fields = set(TinyGroundingGPTConfig.__dataclass_fields__) - {"text_config", "encoder_specs"}
    bad = [f"text_{k}" for k in text_overrides if k not in text_fields]
    bad += [k for k in config_overrides if k not in config_fields]
    if bad:
        ours = sorted(set(TinyGroundingGPTConfig.__annotations__) & config_fields - {"model_type", "sub_configs_defaults"})
        raise ValueError(
            f"preset {preset!r}: unknown override(s) {sorted(bad)}; model fields: {ours}; "
            f"LLM config fields take a 'text_' prefix (text_hidden_size=128), tower fields 'encoder_'"
        )


def build_model(
    preset: str | Preset,
    *,
    llm: str | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    load_weights: bool = True,
    encoder_weights: dict[int, str] | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = 0,
    **overrides: Any,
) -> tuple[TinyGroundingGPTForCausalLM, PreTrainedTokenizerBase | None]:
    """A fresh model (before any training) and its tokenizer.

    ``llm`` replaces the preset's LLM hub name with another name or a local directory;
    ``encoder_weights`` maps a tower index to a local checkpoint path. With ``load_weights=False``
    nothing is read or downloaded: the architecture is built with random (or, under
    ``torch.device("meta")``, no) weights and the tokenizer is ``None`` for real presets.
    ``overrides`` set config fields (``object_grid=4``), with a ``text_`` prefix text-config
    fields (``text_num_hidden_layers=2``), with an ``encoder_`` prefix the preset's encoder-spec
    arguments (``encoder_patch_size=16`` for the tiny towers).
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    register_auto_classes()
    if seed is not None:
        torch.manual_seed(seed)
    text_config = copy.deepcopy(p.text_config)
    text_overrides = {k[5:]: v for k, v in overrides.items() if k.startswith("text_")}
    text_config.update(text_overrides)
    encoder_overrides = {k[8:]: v for k, v in overrides.items() if k.startswith("encoder_")}
    config_overrides = {k: v for k, v in overrides.items() if not k.startswith(("text_", "encoder_"))}
    _check_override_names(p.name, text_overrides, config_overrides, text_config["model_type"])
    try:
        specs = p.encoder_specs(**encoder_overrides)
    except TypeError as e:
        raise ValueError(f"preset {p.name!r}: bad encoder override ({e})") from None
    for index, path in (encoder_weights or {}).items():
        specs[index] = {**specs[index], "pretrained": path}

    if tokenizer is None:
        if not p.is_real:
            tokenizer = tiny_tokenizer()
        elif load_weights:
            tokenizer = AutoTokenizer.from_pretrained(llm or p.llm)
    if tokenizer is not None:
        add_media_tokens(tokenizer)
        if not p.is_real:
            text_config["vocab_size"] = len(tokenizer)
        text_config["pad_token_id"] = tokenizer.pad_token_id
        text_config["eos_token_id"] = tokenizer.convert_tokens_to_ids(IM_END)

    preset_fields = {
        "object_grid": p.object_grid,
        "system_prompt": p.system_prompt,
        "context_length": p.context_length,
        "image_token_id": tokenizer.convert_tokens_to_ids(MEDIA_TOKENS[0]) if tokenizer is not None else None,
        "object_token_id": tokenizer.convert_tokens_to_ids(MEDIA_TOKENS[1]) if tokenizer is not None else None,
    }
    config = TinyGroundingGPTConfig(
        text_config=text_config,
        encoder_specs=[{**s, "pretrained": None} for s in specs],
        **{**preset_fields, **config_overrides},  # an override replaces the preset's value
    )
    # the tiny preset's towers have no published weights; local ones (trained towers) still load
    load_towers = load_weights and (p.is_real or bool(encoder_weights))
    encoder = build_encoder(specs, load_weights=load_towers, resample=config.encoder_resample)
    if p.is_real and load_weights:
        language_model = AutoModelForCausalLM.from_pretrained(llm or p.llm, dtype=dtype)
    else:
        language_model = AutoModelForCausalLM.from_config(config.text_config)
    model = TinyGroundingGPTForCausalLM(config, encoder=encoder, language_model=language_model)
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.language_model.resize_token_embeddings(len(tokenizer))
        model.config.text_config.vocab_size = len(tokenizer)
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model, tokenizer
