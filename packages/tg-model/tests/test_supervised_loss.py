"""The loss computed from labelled positions only equals the LLM's own loss over the whole sequence,
value and gradients, and its logits are exactly the full logits' labelled rows."""

from __future__ import annotations

import copy

import pytest
import torch

from tg_model.inputs import collate
from tg_model.modeling import supervised_loss
from tg_model.presets import build_model
from tg_model.template import IGNORE_INDEX


@pytest.fixture(scope="module")
def trainable():
    # wider initial weights than the preset's, so logits and gradients differ from token to token
    model, tokenizer = build_model("tiny", seed=1, text_initializer_range=0.1)
    return model.train(), tokenizer


@pytest.fixture(scope="module")
def batch(trainable, shapes, sample_encoder_for):
    model, tokenizer = trainable
    encoder = sample_encoder_for(model, tokenizer)
    samples = [shapes.by_task(t) for t in ("rec", "caption", "relation")]
    return collate([encoder.encode(s, image=shapes.image) for s in samples], tokenizer.pad_token_id)


def _inputs(batch) -> dict:
    keys = ("input_ids", "attention_mask", "labels", "pixel_values", "object_pixel_values")
    return {k: batch[k] for k in keys}


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_loss_and_gradients_equal_the_full_sequence_loss(trainable, batch):
    model, _ = trainable
    model.zero_grad(set_to_none=True)
    full = model(**_inputs(batch))
    full.loss.backward()
    full_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    ours = model(**_inputs(batch), supervised_logits_only=True)
    ours.loss.backward()
    our_grads = _grads(model)
    model.zero_grad(set_to_none=True)

    torch.testing.assert_close(ours.loss, full.loss)
    assert full_grads.keys() == our_grads.keys() and any(n.startswith("projector.") for n in our_grads)
    for name, grad in full_grads.items():
        torch.testing.assert_close(our_grads[name], grad, msg=lambda m, n=name: f"{n}: {m}")


def test_logits_are_the_rows_that_predict_a_label(trainable, batch):
    model, _ = trainable
    with torch.no_grad():
        full = model(**_inputs(batch)).logits
        ours = model(**_inputs(batch), supervised_logits_only=True).logits
    predicts_label = batch["labels"][:, 1:] != IGNORE_INDEX
    assert ours.shape == (int(predicts_label.sum()), full.shape[-1])
    assert 0 < ours.shape[0] < batch["input_ids"].numel() / 2  # prompts and media are most of the tokens
    torch.testing.assert_close(ours, full[:, :-1][predicts_label])


def test_the_next_token_is_the_target():
    """Position t's logits are scored against the label at t + 1; unlabelled rows are not scored."""
    head = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    hidden = torch.tensor([[[9.0, 0.0], [0.0, 9.0], [5.0, 5.0]]])  # confident in token 0, then token 1
    right = torch.tensor([[IGNORE_INDEX, 0, 1]])
    wrong = torch.tensor([[IGNORE_INDEX, 1, 0]])
    loss_right, logits = supervised_loss(hidden, right, head)
    loss_wrong, _ = supervised_loss(hidden, wrong, head)
    assert logits.shape == (2, 3)
    assert loss_right < 0.01 < 5 < loss_wrong


def test_a_post_processed_head_keeps_the_llms_own_forward(trainable, batch):
    """Soft-capped or scaled logits (Gemma 2, Cohere) are not the head alone: full logits come back."""
    model, _ = trainable
    capped = copy.deepcopy(model)
    capped.config.text_config.final_logit_softcapping = 30.0
    with torch.no_grad():
        out = capped(**_inputs(batch), supervised_logits_only=True)
    assert out.logits.shape == (*batch["input_ids"].shape, capped.config.text_config.vocab_size)
