"""The encoder is frozen in every stage: no gradients, no updates, eval mode; projector and LLM learn."""

from __future__ import annotations

import torch

from tg_model.inputs import collate
from tg_model.presets import build_model


def _batch(model, tokenizer, shapes, sample_encoder_for, tasks=("coord2obj", "rec")):
    encoder = sample_encoder_for(model, tokenizer)
    batch = collate([encoder.encode(shapes.by_task(t), image=shapes.image) for t in tasks], tokenizer.pad_token_id)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values", "object_pixel_values")}


def test_a_training_step_updates_projector_and_llm_but_never_the_encoder(shapes, sample_encoder_for):
    model, tokenizer = build_model("tiny", seed=2)
    model.train()
    assert not model.encoder.towers.training  # frozen towers stay in eval mode
    assert not any(p.requires_grad for p in model.encoder.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**_batch(model, tokenizer, shapes, sample_encoder_for)).loss.backward()

    assert all(p.grad is None for p in model.encoder.parameters())
    for name, module in (("projector", model.projector), ("language model", model.language_model)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert all(g.abs().sum() > 0 for g in grads), name

    optimizer.step()
    after = model.state_dict()
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        assert changed == (not name.startswith("encoder.")), name


def test_text_only_training_batches_still_give_the_projector_a_gradient():
    """Every data-parallel rank must produce gradients for the same parameters, whatever its batch."""
    model, tokenizer = build_model("tiny", seed=2)
    model.train()
    ids = tokenizer(["<|im_start|>user\nhello<|im_end|>\n"], return_tensors="pt")["input_ids"]
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert model.projector.linear_1.weight.grad is not None
    assert torch.count_nonzero(model.projector.linear_1.weight.grad) == 0
    assert all(p.grad is None for p in model.encoder.parameters())

