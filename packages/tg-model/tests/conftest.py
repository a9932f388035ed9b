"""Shared tiny models, shapes-world samples and a Qwen2.5-style tokenizer for tg-model's tests."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerBase, Qwen2Tokenizer

# Tests never reach a model hub: a load that tried would fail here instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tg_data.schema import Sample
from tg_data.shapes import ShapesConfig, render_scene, scene_samples, split_scenes
from tg_model.inputs import SampleEncoder
from tg_model.modeling import TinyGroundingGPTForCausalLM
from tg_model.presets import build_model
from tg_model.tokenizer import END_OF_TEXT, IM_END, IM_START, add_media_tokens


@dataclass
class Shapes:
    """One shapes-world scene: its rendered image and every sample it yields."""

    image: Image.Image
    samples: list[Sample]

    def by_task(self, task: str) -> Sample:
        return next(s for s in self.samples if s.task == task)


@pytest.fixture(scope="session")
def shapes() -> Shapes:
    config = ShapesConfig()
    scene = next(split_scenes("train", 1, 7, config))
    return Shapes(render_scene(scene), scene_samples(scene, "scene.png", np.random.default_rng(7), config))


@pytest.fixture(scope="session")
def tiny() -> tuple[TinyGroundingGPTForCausalLM, PreTrainedTokenizerBase]:
    """The tiny preset in eval mode; shared, so tests must not change it (build their own to train)."""
    model, tokenizer = build_model("tiny", seed=0)
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def talkative() -> tuple[TinyGroundingGPTForCausalLM, PreTrainedTokenizerBase]:
    """Tiny preset with wider random LLM weights, so greedy decoding varies from token to token (the
    default init repeats one token) and exact token comparisons mean something."""
    model, tokenizer = build_model("tiny", seed=3, text_initializer_range=0.1)
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def sample_encoder_for():
    def make(model: TinyGroundingGPTForCausalLM, tokenizer: PreTrainedTokenizerBase, **kwargs) -> SampleEncoder:
        return SampleEncoder(tokenizer, model.config, model.encoder.image_size, model.image_tokens, **kwargs)

    return make


@pytest.fixture(scope="session")
def qwen_style_tokenizer() -> PreTrainedTokenizerBase:
    """A small tokenizer of Qwen2.5's own class and pre-tokenizer: byte-level BPE, ChatML control
    tokens as added special tokens, media tokens appended after them (as for the real presets)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {END_OF_TEXT: 0, **{ch: i + 1 for i, ch in enumerate(alphabet)}}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("u", "s"), ("us", "e"), ("use", "r"), ("a", "s")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token=IM_END, pad_token=END_OF_TEXT)
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    assert add_media_tokens(tokenizer) == 2
    return tokenizer
