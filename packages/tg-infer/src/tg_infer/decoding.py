"""Pieces of batched decoding: per-row token budgets, and per-row streaming of text as it is made."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria
from transformers.generation.streamers import BaseStreamer


class RowBudgets(StoppingCriteria):
    """Stops each row of a batch once it has its own number of new tokens."""

    def __init__(self, prompt_length: int, budgets: Sequence[int]) -> None:
        self.prompt_length = prompt_length
        self.budgets = torch.tensor(list(budgets), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        made = input_ids.shape[1] - self.prompt_length
        return (self.budgets.to(input_ids.device) <= made)  # type: ignore[return-value]


class IncrementalText:
    """Decodes a growing token list and hands out only the new text.

    Text that ends inside a multi-byte character (decoded as U+FFFD) is held back until the
    character is complete, so streamed pieces always concatenate to the final text.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = 0

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta, self.sent = text[self.sent :], len(text)
        return delta

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        delta, self.sent = text[self.sent :], len(text)
        return delta


class RowStreamer(BaseStreamer):
    """Receives each decoding step's tokens for the whole batch and calls ``on_text(row, delta)``.

    A row stops streaming at its end-of-sequence token or its budget, whatever the batch does after.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        budgets: Sequence[int],
        eos_ids: set[int],
        on_text: Callable[[int, str], None],
    ) -> None:
        self.rows = [IncrementalText(tokenizer) for _ in budgets]
        self.budgets = list(budgets)
        self.eos_ids = eos_ids
        self.on_text = on_text
        self.done = [False] * len(budgets)
        self.seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:  # generate() first hands over the prompt
            self.seen_prompt = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if token in self.eos_ids:
                self.done[row] = True
                continue
            delta = self.rows[row].add(int(token))
            if len(self.rows[row].ids) >= self.budgets[row]:
                self.done[row] = True
                delta += self.rows[row].flush()
            if delta:
                self.on_text(row, delta)

    def end(self) -> None:
        for row, text in enumerate(self.rows):
            delta = text.flush()
            if delta:
                self.on_text(row, delta)
