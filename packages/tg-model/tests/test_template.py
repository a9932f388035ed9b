"""ChatML layout: ids and labels token by token, media expansion, generation prompts, truncation."""

from __future__ import annotations

import pytest

from tg_data.schema import Turn
from tg_model.presets import QWEN_SYSTEM_PROMPT, tiny_tokenizer
from tg_model.template import IGNORE_INDEX, ChatTemplate, SampleRefused
from tg_model.tokenizer import IM_END, IM_START

IMAGE_TOKENS, OBJECT_TOKENS = 5, 3

TURNS = [
    Turn("user", "<image>\nWhat is at [0.1,0.25,0.3,0.4]?"),
    Turn("assistant", "A red circle."),
    Turn("user", "And <object> and <object>?"),
    Turn("assistant", "Both are squares: [0.5,0.5,0.9,0.95]."),
]


@pytest.fixture(scope="module", params=["tiny", "qwen-style"])
def tokenizer(request, qwen_style_tokenizer):
    return tiny_tokenizer() if request.param == "tiny" else qwen_style_tokenizer


def _template(tokenizer, system_prompt=None, max_length=2048, image_placement="as_written") -> ChatTemplate:
    return ChatTemplate(
        tokenizer,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        object_token_id=tokenizer.convert_tokens_to_ids("<object>"),
        image_tokens=IMAGE_TOKENS,
        object_tokens=OBJECT_TOKENS,
        system_prompt=system_prompt,
        max_length=max_length,
        image_placement=image_placement,
    )


def _expected(tokenizer, segments) -> tuple[list[int], list[int]]:
    """Ids and labels from (text or id list, supervised) segments written out by hand."""
    ids: list[int] = []
    labels: list[int] = []
    for piece, supervised in segments:
        piece_ids = piece if isinstance(piece, list) else tokenizer(piece, add_special_tokens=False)["input_ids"]
        ids += piece_ids
        labels += piece_ids if supervised else [IGNORE_INDEX] * len(piece_ids)
    return ids, labels


def _conversation_segments(tokenizer):
    image = [tokenizer.convert_tokens_to_ids("<image>")] * IMAGE_TOKENS
    obj = [tokenizer.convert_tokens_to_ids("<object>")] * OBJECT_TOKENS
    return [
        (f"{IM_START}system\n{QWEN_SYSTEM_PROMPT}{IM_END}\n{IM_START}user\n", False),
        (image, False),
        (f"\nWhat is at [0.1,0.25,0.3,0.4]?{IM_END}\n{IM_START}assistant\n", False),
        (f"A red circle.{IM_END}", True),
        (f"\n{IM_START}user\nAnd ", False),
        (obj, False),
        (" and ", False),
        (obj, False),
        (f"?{IM_END}\n{IM_START}assistant\n", False),
        (f"Both are squares: [0.5,0.5,0.9,0.95].{IM_END}", True),
        ("\n", False),
    ]


def test_ids_and_labels_match_a_hand_built_chatml_layout_token_by_token(tokenizer):
    encoded = _template(tokenizer, QWEN_SYSTEM_PROMPT).encode(TURNS, "s1")
    ids, labels = _expected(tokenizer, _conversation_segments(tokenizer))
    assert len(encoded.input_ids) == len(ids) == len(encoded.labels)
    for k, (got_id, want_id, got_label, want_label) in enumerate(
        zip(encoded.input_ids, ids, encoded.labels, labels, strict=True)
    ):
        assert (got_id, got_label) == (want_id, want_label), f"token {k}"
    assert (encoded.n_images, encoded.n_objects) == (1, 2)


def test_ids_equal_tokenising_the_whole_rendered_chatml_text(tokenizer):
    """Encoding turn by turn gives what tokenising the full Qwen2.5 ChatML rendering gives."""
    rendered = f"{IM_START}system\n{QWEN_SYSTEM_PROMPT}{IM_END}\n" + "".join(
        f"{IM_START}{t.role}\n{t.text}{IM_END}\n" for t in TURNS
    )
    whole = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    image_id, object_id = (tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<object>"))
    expanded = []
    for t in whole:
        expanded += [t] * (IMAGE_TOKENS if t == image_id else OBJECT_TOKENS if t == object_id else 1)
    assert _template(tokenizer, QWEN_SYSTEM_PROMPT).encode(TURNS).input_ids == expanded


def test_labels_cover_exactly_the_assistant_content_and_its_closing_token(tokenizer):
    encoded = _template(tokenizer).encode(TURNS)
    supervised = [(i, lab) for i, lab in enumerate(encoded.labels) if lab != IGNORE_INDEX]
    assert all(encoded.input_ids[i] == lab for i, lab in supervised)
    text = tokenizer.decode([lab for _, lab in supervised])
    assert text == f"A red circle.{IM_END}Both are squares: [0.5,0.5,0.9,0.95].{IM_END}"


def test_media_placeholders_expand_to_their_feature_counts(tokenizer):
    image_id, object_id = (tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<object>"))
    for n_objects in (0, 1, 4):
        turns = [Turn("user", "<image>\nShow " + " ".join(["<object>"] * n_objects)), Turn("assistant", "ok")]
        encoded = _template(tokenizer).encode(turns)
        assert encoded.input_ids.count(image_id) == IMAGE_TOKENS
        assert encoded.input_ids.count(object_id) == OBJECT_TOKENS * n_objects
        assert (encoded.n_images, encoded.n_objects) == (1, n_objects)
        first = encoded.input_ids.index(image_id)
        assert encoded.input_ids[first : first + IMAGE_TOKENS] == [image_id] * IMAGE_TOKENS


def test_placeholders_inside_an_assistant_turn_are_inputs_not_targets(tokenizer):
    object_id = tokenizer.convert_tokens_to_ids("<object>")
    turns = [Turn("user", "Which one?"), Turn("assistant", "This one: <object>.")]
    encoded = _template(tokenizer).encode(turns)
    positions = [i for i, t in enumerate(encoded.input_ids) if t == object_id]
    assert len(positions) == OBJECT_TOKENS
    assert all(encoded.labels[i] == IGNORE_INDEX for i in positions)
    assert tokenizer.decode([lab for lab in encoded.labels if lab != IGNORE_INDEX]) == f"This one: .{IM_END}"


def test_generation_prompt_ends_with_the_assistant_header_and_extends_the_history(tokenizer):
    template = _template(tokenizer, QWEN_SYSTEM_PROMPT)
    prompt = template.encode(TURNS[:3], add_generation_prompt=True)
    header = tokenizer(f"{IM_START}assistant\n", add_special_tokens=False)["input_ids"]
    assert prompt.input_ids[-len(header) :] == header
    history = template.encode(TURNS[:3])
    assert prompt.input_ids == history.input_ids + header
    assert prompt.labels[-len(header) :] == [IGNORE_INDEX] * len(header)
    full = template.encode(TURNS)
    assert full.input_ids[: len(prompt.input_ids)] == prompt.input_ids


def test_a_system_turn_in_the_sample_replaces_the_default_system_prompt(tokenizer):
    turns = [Turn("system", "Be brief."), *TURNS[:2]]
    ids = _template(tokenizer, QWEN_SYSTEM_PROMPT).encode(turns).input_ids
    text = tokenizer.decode(ids)
    assert text.startswith(f"{IM_START}system\nBe brief.{IM_END}\n{IM_START}user\n")
    assert QWEN_SYSTEM_PROMPT not in text
    assert text.count(f"{IM_START}system") == 1


def _span(ids: list[int], token_id: int) -> tuple[int, int]:
    first = ids.index(token_id)
    last = len(ids) - 1 - ids[::-1].index(token_id)
    return first, last


@pytest.mark.parametrize("which", ["image", "second object"])
def test_truncation_through_a_media_span_refuses_the_sample_by_name(tokenizer, which):
    full = _template(tokenizer).encode(TURNS).input_ids
    image_id, object_id = (tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<object>"))
    first, last = _span(full, image_id if which == "image" else object_id)
    cut = first + 2 if which == "image" else last  # inside the span: its last row is cut off
    with pytest.raises(SampleRefused, match=r"'sample-42'.*image or object span") as info:
        _template(tokenizer, max_length=cut).encode(TURNS, "sample-42")
    assert info.value.reason == "too_long"
    assert info.value.sample_id == "sample-42"


def test_truncation_after_the_media_keeps_the_prefix_and_its_labels(tokenizer):
    full = _template(tokenizer).encode(TURNS)
    object_id = tokenizer.convert_tokens_to_ids("<object>")
    _, last_media = _span(full.input_ids, object_id)
    for cut in (last_media + 1, len(full.input_ids) - 4):
        truncated = _template(tokenizer, max_length=cut).encode(TURNS, "s")
        assert truncated.input_ids == full.input_ids[:cut]
        assert truncated.labels == full.labels[:cut]
        assert any(lab != IGNORE_INDEX for lab in truncated.labels)
    exact = _template(tokenizer, max_length=len(full.input_ids)).encode(TURNS)
    assert exact == full


def test_a_cut_after_the_media_in_the_same_turn_is_not_refused(tokenizer):
    turns = [
        Turn("user", "Hi"),
        Turn("assistant", "Hello"),
        Turn("user", "<object> is what I ask about, with a long question after it"),
        Turn("assistant", "Fine."),
    ]
    full = _template(tokenizer).encode(turns)
    _, last_media = _span(full.input_ids, tokenizer.convert_tokens_to_ids("<object>"))
    truncated = _template(tokenizer, max_length=last_media + 3).encode(turns, "s")
    assert truncated.labels == full.labels[: last_media + 3]
    assert tokenizer.decode([lab for lab in truncated.labels if lab != IGNORE_INDEX]) == f"Hello{IM_END}"


def test_truncation_that_leaves_no_answer_is_refused(tokenizer):
    turns = [Turn("user", "<image>\nDescribe the image in detail please."), Turn("assistant", "Shapes.")]
    full = _template(tokenizer).encode(turns)
    _, last_image = _span(full.input_ids, tokenizer.convert_tokens_to_ids("<image>"))
    with pytest.raises(SampleRefused, match="no answer tokens remain") as info:
        _template(tokenizer, max_length=last_image + 2).encode(turns, "quiet")
    assert (info.value.reason, info.value.sample_id) == ("too_long", "quiet")


def test_a_generation_prompt_longer_than_max_length_is_refused(tokenizer):
    prompt_length = len(_template(tokenizer).encode(TURNS[:3], add_generation_prompt=True).input_ids)
    with pytest.raises(SampleRefused, match=r"prompt of \d+ tokens exceeds max_length") as info:
        _template(tokenizer, max_length=prompt_length - 1).encode(TURNS[:3], "p", add_generation_prompt=True)
    assert info.value.reason == "too_long"


def test_a_tokenizer_without_chatml_tokens_is_rejected():
    from transformers import Qwen2Tokenizer

    plain = Qwen2Tokenizer(vocab={"<|endoftext|>": 0, "a": 1}, merges=[])
    with pytest.raises(ValueError, match="lacks the ChatML tokens"):
        ChatTemplate(plain, image_token_id=1, object_token_id=1, image_tokens=1, object_tokens=1)


def test_image_after_text_equals_writing_the_question_first(tokenizer):
    """``after_text`` moves each turn's image below its text; the objects of the later turn stay put."""
    written_after = [
        Turn("user", "What is at [0.1,0.25,0.3,0.4]?\n<image>"), *TURNS[1:],
    ]
    moved = _template(tokenizer, QWEN_SYSTEM_PROMPT, image_placement="after_text").encode(TURNS)
    as_written = _template(tokenizer, QWEN_SYSTEM_PROMPT).encode(written_after)
    assert (moved.input_ids, moved.labels) == (as_written.input_ids, as_written.labels)
    assert (moved.n_images, moved.n_objects) == (1, 2)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    question = tokenizer("What is at", add_special_tokens=False)["input_ids"]
    first_image = moved.input_ids.index(image_id)
    starts = [k for k in range(len(moved.input_ids)) if moved.input_ids[k : k + len(question)] == question]
    assert starts and starts[0] < first_image  # the question now precedes the image rows


def test_image_before_text_normalises_a_trailing_image_as_llava_does(tokenizer):
    trailing = [Turn("user", "Describe it.  <image> "), Turn("assistant", "A circle.")]
    leading = [Turn("user", "<image>\nDescribe it."), Turn("assistant", "A circle.")]
    before = _template(tokenizer, image_placement="before_text")
    assert before.encode(trailing).input_ids == _template(tokenizer).encode(leading).input_ids
    assert before.encode(leading).input_ids == _template(tokenizer).encode(leading).input_ids  # already in place
    assert _template(tokenizer).encode(trailing).input_ids != _template(tokenizer).encode(leading).input_ids


def test_an_image_alone_in_its_turn_is_left_alone_by_every_placement(tokenizer):
    turns = [Turn("user", "<image>"), Turn("assistant", "ok")]
    expected = _template(tokenizer).encode(turns).input_ids
    for placement in ("before_text", "after_text"):
        assert _template(tokenizer, image_placement=placement).encode(turns).input_ids == expected


def test_an_unknown_image_placement_is_refused_with_the_choices(tokenizer):
    with pytest.raises(ValueError, match="as_written, before_text, after_text; got 'question_first'"):
        _template(tokenizer, image_placement="question_first")
