"""ChatML token layout: turns to ``input_ids`` and ``labels``, with media placeholders expanded.

``<image>`` becomes ``image_tokens`` copies of the image token id and each ``<object>`` becomes
``object_tokens`` copies of the object token id; the model later overwrites those rows with
features. Only assistant turns (their text and closing ``<|im_end|>``) carry labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from tg_data.schema import IMAGE_TOKEN, OBJECT_TOKEN, Role, Turn
from tg_model.configuration import check_image_placement
from tg_model.tokenizer import IM_END, IM_START

IGNORE_INDEX = -100
_MEDIA = re.compile(f"({re.escape(IMAGE_TOKEN)}|{re.escape(OBJECT_TOKEN)})")


def place_image(text: str, placement: str) -> str:
    """A turn's text with its ``<image>`` placeholders moved before or after the rest (one line apart).

    Object placeholders stay where they are: they belong to the words around them.
    """
    count = text.count(IMAGE_TOKEN)
    if placement == "as_written" or count == 0:
        return text
    rest = text.replace(IMAGE_TOKEN, "").strip()
    images = "\n".join([IMAGE_TOKEN] * count)
    if not rest:
        return images
    return f"{images}\n{rest}" if placement == "before_text" else f"{rest}\n{images}"


class SampleRefused(ValueError):
    """A sample the model cannot take as it is; ``reason`` is a short key for counting."""

    def __init__(self, sample_id: str, reason: str, message: str) -> None:
        super().__init__(f"sample {sample_id!r}: {message}")
        self.sample_id = sample_id
        self.reason = reason


@dataclass(frozen=True)
class EncodedText:
    input_ids: list[int]
    labels: list[int]
    n_images: int
    n_objects: int


class ChatTemplate:
    """Encodes turns the way Qwen2.5's ChatML template renders them."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_token_id: int,
        object_token_id: int,
        image_tokens: int,
        object_tokens: int,
        system_prompt: str | None = None,
        max_length: int = 2048,
        image_placement: str = "as_written",
    ) -> None:
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.object_token_id = object_token_id
        self.image_tokens = image_tokens
        self.object_tokens = object_tokens
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.image_placement = check_image_placement(image_placement)
        self.im_start = tokenizer.convert_tokens_to_ids(IM_START)
        self.im_end = tokenizer.convert_tokens_to_ids(IM_END)
        unk = tokenizer.unk_token_id
        if self.im_start in (None, unk) or self.im_end in (None, unk):
            raise ValueError(f"tokenizer lacks the ChatML tokens {IM_START} / {IM_END}")
        self._newline = self._ids("\n")
        self._headers = {role.value: [self.im_start, *self._ids(f"{role.value}\n")] for role in Role}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _content(self, text: str) -> tuple[list[int], int, int]:
        pieces = _MEDIA.split(text)
        texts = [p for p in pieces if p and p not in (IMAGE_TOKEN, OBJECT_TOKEN)]
        encoded = iter(self.tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
        ids: list[int] = []
        n_img = n_obj = 0
        for p in pieces:
            if p == IMAGE_TOKEN:
                ids += [self.image_token_id] * self.image_tokens
                n_img += 1
            elif p == OBJECT_TOKEN:
                ids += [self.object_token_id] * self.object_tokens
                n_obj += 1
            elif p:
                ids += next(encoded)
        return ids, n_img, n_obj

    def encode(self, turns: Sequence[Turn], sample_id: str = "?", add_generation_prompt: bool = False) -> EncodedText:
        """Token ids and labels for ``turns``; with ``add_generation_prompt`` the assistant header ends it."""
        ids: list[int] = []
        labels: list[int] = []
        n_img = n_obj = 0
        media_end = 0
        all_turns = list(turns)
        if self.system_prompt and (not all_turns or all_turns[0].role != Role.SYSTEM):
            all_turns.insert(0, Turn(Role.SYSTEM.value, self.system_prompt))
        for turn in all_turns:
            header = self._headers[turn.role]
            content, i, o = self._content(place_image(turn.text, self.image_placement))
            n_img, n_obj = n_img + i, n_obj + o
            supervised = turn.role == Role.ASSISTANT
            body = [*content, self.im_end]
            if i or o:  # just past this turn's last image/object row
                last = max(k for k, t in enumerate(content) if t in (self.image_token_id, self.object_token_id))
                media_end = len(ids) + len(header) + last + 1
            ids += header + body + self._newline
            # placeholders are inputs only: their rows become features, never prediction targets
            body_labels = [IGNORE_INDEX if t in (self.image_token_id, self.object_token_id) else t for t in body]
            labels += [IGNORE_INDEX] * len(header) + (body_labels if supervised else [IGNORE_INDEX] * len(body))
            labels += [IGNORE_INDEX] * len(self._newline)
        if add_generation_prompt:
            header = self._headers[Role.ASSISTANT]
            ids += header
            labels += [IGNORE_INDEX] * len(header)
        if len(ids) > self.max_length:
            if add_generation_prompt:
                raise SampleRefused(
                    sample_id, "too_long", f"prompt of {len(ids)} tokens exceeds max_length {self.max_length}"
                )
            if media_end > self.max_length:
                raise SampleRefused(
                    sample_id,
                    "too_long",
                    f"{len(ids)} tokens exceed max_length {self.max_length} and truncation would cut "
                    "through an image or object span; raise max_length or shorten the sample",
                )
            ids, labels = ids[: self.max_length], labels[: self.max_length]
            if all(x == IGNORE_INDEX for x in labels):
                raise SampleRefused(
                    sample_id, "too_long",
                    f"no answer tokens remain after truncation to max_length {self.max_length}",
                )
        return EncodedText(ids, labels, n_img, n_obj)
