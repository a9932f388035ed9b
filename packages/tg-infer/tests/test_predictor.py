from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tg_data.box import Box
from tg_data.prompts import REC_PROMPT
from tg_data.schema import ObjectRef, Role, Show, Turn
from tg_infer.errors import InferError, ModelLoadError
from tg_infer.predictor import DESCRIBE_PROMPT, Predictor
from tg_infer.requests import Request, Sampling
from tg_model.inputs import collate


def mixed_requests(images: dict[str, Path]) -> list[Request]:
    from PIL import Image

    tall_narrow = Image.effect_noise((20, 44), 60).convert("RGB")
    """Requests of different lengths and kinds: images of several shapes, object images, text only."""
    wide, tall, square = images["wide"], images["tall"], images["square"]
    return [
        Request.ask(REC_PROMPT.format(expression="the red circle"), wide, max_new_tokens=6),
        Request.ask("Describe the image briefly, please, in a few words.", tall, max_new_tokens=4),
        Request.ask("What is <object>?", square, [ObjectRef(Box(0.1, 0.2, 0.6, 0.7), Show.IMAGE.value)],
                    max_new_tokens=5),
        Request.ask("Hello there.", None, max_new_tokens=3),
        Request((Turn("user", "<image>\nWhat shapes are here?"), Turn("assistant", "A star [0.100,0.100,0.400,0.400]."),
                 Turn("user", "Where is the object at [0.100,0.100,0.400,0.400]?")), tall_narrow,
                max_new_tokens=6),
    ]


def test_load_chooses_cpu_fp32_here_and_accepts_overrides(model_dir: Path) -> None:
    p = Predictor.load(model_dir)
    assert p.device == torch.device("cpu") and p.dtype == torch.float32
    assert next(p.model.parameters()).dtype == torch.float32
    assert p.name == model_dir.name
    bf16 = Predictor.load(model_dir, device="cpu", dtype="bf16")
    assert bf16.dtype == torch.bfloat16 and next(bf16.model.parameters()).dtype == torch.bfloat16
    assert isinstance(bf16.generate([Request.ask("Hi.", max_new_tokens=2)])[0].text, str)


def test_load_refuses_what_is_not_a_model(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        Predictor.load(tmp_path)
    with pytest.raises(InferError, match="unknown dtype"):
        Predictor.load(model_dir, dtype="fp8")


def test_batched_greedy_equals_one_at_a_time(predictor: Predictor, images: dict[str, Path]) -> None:
    requests = mixed_requests(images)
    batched = predictor.generate(requests)
    alone = [predictor.generate([r])[0] for r in requests]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert len({tuple(g.token_ids) for g in batched}) == len(requests)  # the answers tell the requests apart
    # Each row keeps to its own budget; without an end token a row stops for "length".
    for r, g in zip(requests, batched, strict=True):
        assert len(g.token_ids) <= r.max_new_tokens
        assert g.finish_reason == ("length" if len(g.token_ids) == r.max_new_tokens else "stop")
    # The rows really were decoded together, left-padded: prompts differ in length.
    assert len({g.prompt_tokens for g in batched}) > 1


def test_generation_matches_plain_hf_generate(predictor: Predictor, images: dict[str, Path]) -> None:
    """The predictor adds batching and bookkeeping around generate(), never different tokens."""
    request = mixed_requests(images)[0]
    prepared = predictor.prepare(request)
    batch = collate([prepared.encoded], predictor.pad_token_id, padding_side="left")
    with torch.inference_mode():
        out = predictor.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                       pixel_values=batch["pixel_values"], max_new_tokens=request.max_new_tokens,
                                       do_sample=False)
    reference = out[0, batch["input_ids"].shape[1]:].tolist()
    reference = reference[: next((i for i, t in enumerate(reference) if t in predictor.eos_ids), len(reference))]
    assert predictor.generate([request])[0].token_ids == reference


def test_streamed_pieces_add_up_to_each_answer(predictor: Predictor, images: dict[str, Path]) -> None:
    requests = mixed_requests(images)
    pieces: dict[int, list[str]] = {}
    generations = predictor.generate(requests, on_text=lambda i, d: pieces.setdefault(i, []).append(d))
    for i, g in enumerate(generations):
        assert "".join(pieces.get(i, [])) == g.text


def test_batches_are_split_by_size_and_sampling(model_dir: Path, images: dict[str, Path]) -> None:
    small = Predictor.load(model_dir, max_batch_size=2)
    requests = mixed_requests(images)
    assert [g.token_ids for g in small.generate(requests)] == [
        g.token_ids for g in Predictor.load(model_dir).generate(requests)
    ]
    sampled = Request.ask("Hello there.", max_new_tokens=8, sampling=Sampling(temperature=1.5, top_k=50, seed=7))
    greedy = Request.ask("Hello there.", max_new_tokens=8)
    first = small.generate([sampled, greedy])
    again = small.generate([greedy, sampled])
    assert first[0].token_ids == again[1].token_ids  # the seed makes sampling repeatable
    assert first[1].token_ids == again[0].token_ids == small.generate([greedy])[0].token_ids


def test_ground_asks_the_rec_prompt_and_reports_the_raw_answer(predictor: Predictor, images: dict[str, Path]) -> None:
    g = predictor.ground(images["wide"], "the red circle", max_new_tokens=6)
    same = predictor.generate([Request.ask(REC_PROMPT.format(expression="the red circle"), images["wide"],
                                           max_new_tokens=6)])[0]
    assert g.answer == same.text
    assert (g.width, g.height) == (64, 32)
    # An untrained model writes no box: a miss, reported as such rather than guessed.
    assert not g.found and g.box is None and g.coords is None
    with pytest.raises(InferError, match="empty"):
        predictor.ground(images["wide"], "  ")


def test_describe_and_chat_use_the_conversation(predictor: Predictor, images: dict[str, Path]) -> None:
    d = predictor.describe(images["tall"], max_new_tokens=4)
    direct = predictor.generate([Request.ask(DESCRIBE_PROMPT, images["tall"], max_new_tokens=4)])[0]
    assert d.text == direct.text
    messages = [{"role": "user", "content": "What is <object>?"}]
    box = Box(0.2, 0.2, 0.7, 0.6)
    a = predictor.chat(messages, images["square"], [box], max_new_tokens=4)
    b = predictor.generate([Request.ask("What is <object>?", images["square"],
                                        [ObjectRef(box, Show.IMAGE.value)], max_new_tokens=4)])[0]
    assert a.text == b.text
    with pytest.raises(InferError, match="one image per conversation"):
        predictor.chat(messages, [images["square"], images["wide"]], [box])


def test_bad_requests_say_what_is_wrong(predictor: Predictor, images: dict[str, Path]) -> None:
    with pytest.raises(InferError, match=r"1 <object> placeholder\(s\) but 0 object"):
        predictor.generate([Request.ask("What is <object>?", images["wide"])])
    with pytest.raises(InferError, match=r"<image> placeholder\(s\) but no image"):
        predictor.generate([Request.ask("<image>\nWhat is this?")])
    with pytest.raises(InferError, match="exceeds the model's context"):
        predictor.generate([Request.ask("Hi.", max_new_tokens=predictor.context_length)])
    with pytest.raises(InferError, match="last message must be the user's"):
        predictor.chat([("user", "Hi"), ("assistant", "Hello")])
    with pytest.raises(InferError, match="does not exist"):
        predictor.ground(images["wide"].parent / "missing.png", "x")
    with pytest.raises(InferError, match="lies in the padding"):
        # The wide image is padded top and bottom; a box in the top strip has no pixels to crop.
        predictor.generate([Request.ask("What is <object>?", images["wide"],
                                        [ObjectRef(Box(0.1, 0.0, 0.5, 0.1), Show.IMAGE.value)])])
    with pytest.raises(InferError, match="temperature"):
        Sampling(temperature=-1)


def test_placeholder_is_added_once_to_the_first_user_turn(make_image) -> None:
    r = Request((Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", "Hello"), Turn("user", "Where?")),
                image=make_image(8, 8, 0))
    turns = r.with_image_placeholder()
    assert [t.text for t in turns] == ["Be brief.", "<image>\nHi", "Hello", "Where?"]
    assert turns[1].role == Role.USER


def test_describe_asks_what_the_shapes_world_teaches() -> None:
    from tg_data.shapes.tasks import DESC_PROMPT

    assert DESCRIBE_PROMPT == DESC_PROMPT
