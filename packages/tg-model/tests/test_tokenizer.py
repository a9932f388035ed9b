"""Tokenizers: special tokens stay whole, digits are single tokens, the shipped asset is current."""

from __future__ import annotations

import json
import random
import unicodedata
from importlib import resources

import pytest

from tg_data.box import Box
from tg_data.coords import render_box
from tg_data.schema import IMAGE_TOKEN, OBJECT_TOKEN
from tg_model.presets import tiny_tokenizer
from tg_model.tokenizer import (
    CHAT_TOKENS,
    IM_END,
    MEDIA_TOKENS,
    add_media_tokens,
    shapes_corpus,
    train_tiny_tokenizer,
)

SPECIALS = (*CHAT_TOKENS, *MEDIA_TOKENS)


@pytest.fixture(scope="module", params=["tiny", "qwen-style"])
def tokenizer(request, qwen_style_tokenizer):
    return tiny_tokenizer() if request.param == "tiny" else qwen_style_tokenizer


@pytest.mark.parametrize("special", SPECIALS)
def test_special_tokens_are_single_tokens_wherever_they_appear(tokenizer, special):
    token_id = tokenizer.get_vocab()[special]
    for text in (special, f"ab{special}cd", f" {special} ", f"1{special}2", f"{special}{special}"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids.count(token_id) == text.count(special), text
        assert tokenizer.decode(ids) == text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text.replace(special, "")


def test_media_token_ids_follow_the_vocabulary_and_are_added_once(tokenizer):
    before = len(tokenizer)
    assert add_media_tokens(tokenizer) == 0
    assert len(tokenizer) == before
    ids = [tokenizer.convert_tokens_to_ids(t) for t in MEDIA_TOKENS]
    assert len(set(ids)) == 2 and all(0 <= i < len(tokenizer) for i in ids)


def test_every_digit_is_its_own_token_in_a_qwen_style_tokenizer(qwen_style_tokenizer):
    """Qwen2.5 spells numbers digit by digit; the model's coordinates must survive that."""
    tokenizer = qwen_style_tokenizer
    for d in "0123456789":
        assert len(tokenizer(d, add_special_tokens=False)["input_ids"]) == 1, d
    coord = render_box(Box(0.309, 0.054, 0.523, 0.869))
    for context in (coord, f"at {coord}.", f"x{coord}y"):
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(context, add_special_tokens=False)["input_ids"])
        assert [p for p in pieces if any(c.isdigit() for c in p)] == [c for c in context if c.isdigit()]


def test_tiny_tokenizer_reads_a_coordinate_as_coarse_value_then_digits():
    """``0.309`` is ``0.3 0 9``: one token for the first decimal, then one per further digit."""
    tokenizer = tiny_tokenizer()
    coord = render_box(Box(0.309, 0.054, 0.523, 1.0))
    expected = ["0.3", "0", "9", "0.0", "5", "4", "0.5", "2", "3", "1.0", "0", "0"]
    for context in (coord, f"at {coord}.", f"x{coord}y"):
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(context, add_special_tokens=False)["input_ids"])
        assert [p for p in pieces if any(c.isdigit() for c in p)] == expected, pieces
    assert len(tokenizer(coord, add_special_tokens=False)["input_ids"]) == 17  # 4 x 3 digits + 5 marks
    for value in ("0.0", "0.5", "1.0"):
        assert len(tokenizer(value, add_special_tokens=False)["input_ids"]) == 1
    for digit in "0123456789":
        assert len(tokenizer(digit, add_special_tokens=False)["input_ids"]) == 1
    # other numbers keep working: digits alone, "d.d" pairs whole
    assert tokenizer.convert_ids_to_tokens(tokenizer("12 3.25", add_special_tokens=False)["input_ids"]) == [
        "1", "2", "Ġ", "3.2", "5"
    ]


def test_the_shipped_tiny_tokenizer_equals_a_fresh_one_from_the_shapes_corpus():
    """If this fails the asset is stale: regenerate it with
    ``train_tiny_tokenizer(shapes_corpus()).backend_tokenizer.save(path, pretty=True)``."""
    fresh = json.loads(train_tiny_tokenizer(shapes_corpus()).backend_tokenizer.to_str())
    shipped = json.loads((resources.files("tg_model") / "assets" / "tiny_tokenizer.json").read_text())
    assert shipped == fresh


def test_tiny_tokenizer_has_the_chat_conventions_of_qwen():
    tok = tiny_tokenizer()
    assert tok.eos_token == IM_END
    assert tok.pad_token == "<|endoftext|>"
    assert tok.padding_side == "right"
    assert len(tok) <= 1024


def _random_text(rng: random.Random) -> str:
    pools = [
        "abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,;:!?[]()-_'\"",
        " \t\n\r",
        "éèüßøåñçÆŒ",
        "日本語中文한국어",
        "😀🚀👍🏽❤️\u200d",
        "".join(chr(c) for c in range(0x370, 0x3FF)),
        IMAGE_TOKEN + OBJECT_TOKEN,
    ]
    pieces = []
    for _ in range(rng.randint(1, 40)):
        pool = rng.choice(pools)
        pieces.append(pool if pool.startswith("<") and rng.random() < 0.5 else rng.choice(pool))
    return "".join(pieces)


def test_decode_inverts_encode_for_arbitrary_unicode(tokenizer):
    """Byte-level BPE covers any text; Qwen2.5's tokenizer NFC-normalises first, the tiny one does not."""
    normalise = tokenizer.backend_tokenizer.normalizer is not None
    rng = random.Random(1234)
    texts = [_random_text(rng) for _ in range(300)]
    texts += ["", " ", "  leading and trailing  ", "\n\n\nnewlines\n", "\x00\x01 control", "\U0010ffff", "e\u0301"]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        expected = unicodedata.normalize("NFC", text) if normalise else text
        assert tokenizer.decode(ids) == expected, repr(text)
