"""Tokenizers: the special tokens every preset needs, and the tiny preset's own tokenizer.

The tiny tokenizer is a byte-level BPE trained locally on shapes-world text (so it needs no
download and covers any text), with ChatML's control tokens as Qwen2.5 has them. Numbers are
split so that a coordinate's units digit, point and first decimal form one token ("0.4") and every
further digit is its own: ``0.456`` reads as ``0.4 5 6``. The first token of each coordinate is
then a coarse position (eleven values, 0.0 to 1.0) that the model learns directly, and the finer
digits refine it; a box costs 17 tokens instead of 25.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tg_data.schema import IMAGE_TOKEN, OBJECT_TOKEN

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
CHAT_TOKENS = (END_OF_TEXT, IM_START, IM_END)
MEDIA_TOKENS = (IMAGE_TOKEN, OBJECT_TOKEN)
# GPT-2's word split, with "digit.digit" kept whole and other digits alone.
WORD_SPLIT = r"\d\.\d|\d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
COARSE_VALUES = [f"{i}.{j}" for i in range(10) for j in range(10)]


def add_media_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add ``<image>`` and ``<object>`` as special tokens; returns how many were new."""
    missing = [t for t in MEDIA_TOKENS if t not in tokenizer.get_vocab()]
    if not missing:
        return 0
    return tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A small byte-level BPE with single-digit tokens and the chat and media special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(WORD_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*CHAT_TOKENS, *MEDIA_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # every "d.d" pair often enough that each becomes one token, whatever the corpus holds
    tok.train_from_iterator([*texts, *[" ".join(COARSE_VALUES)] * 50], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        additional_special_tokens=list(MEDIA_TOKENS),
    )
    fast.padding_side = "right"
    return fast


def shapes_corpus(n_scenes: int = 300, seed: int = 12345) -> list[str]:
    """Deterministic text from the shapes world plus generic chat words, to train the tiny BPE."""
    import numpy as np

    from tg_data.shapes import ShapesConfig, scene_samples, split_scenes
    from tg_data.shapes.pope import POPE_PROMPT

    config = ShapesConfig()
    texts: list[str] = []
    for k, scene in enumerate(split_scenes("train", n_scenes, seed, config)):
        rng = np.random.default_rng([seed, k])
        for s in scene_samples(scene, "x.png", rng, config):
            texts.extend(t.text for t in s.turns)
    texts += [POPE_PROMPT.format(object="red circle"), "Yes", "No", "yes", "no"]
    texts += ["You are a helpful assistant.", "user", "assistant", "system", "Answer the question using a single word or phrase."]
    return texts
