"""Question identity: the same question written by two files must compare equal.

Question files add prompt suffixes ("Answer the question using a single word or phrase."), an
``<image>`` placeholder, different spacing and case; benchmark releases fix typos in later
versions. ``question_key`` strips the first three on both sides. Spelling fixes are applied only
where a caller passes them, and the caller counts every match that needed one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tg_data.schema import IMAGE_TOKEN

#: LLaVA-1.5's short-answer instruction, appended to POPE, MME, GQA and VQAv2 questions.
LLAVA_SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
DEFAULT_SUFFIXES: tuple[str, ...] = (LLAVA_SHORT_ANSWER,)

#: POPE's older release (the one LLaVA-1.5's question file was built from) wrote "imange" in
#: every question about an object whose name takes "an"; the label files fixed it later.
POPE_SPELLING_FIXES: Mapping[str, str] = {"imange": "image"}

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class QuestionKey:
    text: str
    fixed: bool  # True when a spelling fix changed the text


def strip_prompt(text: str, suffixes: Sequence[str] = DEFAULT_SUFFIXES) -> str:
    """The question without an ``<image>`` placeholder and without trailing prompt suffixes."""
    text = text.replace(IMAGE_TOKEN, " ").strip()
    changed = True
    while changed:
        changed = False
        for suffix in suffixes:
            s = suffix.strip()
            if s and text.endswith(s):
                text = text[: -len(s)].rstrip()
                changed = True
    return text


def question_key(
    text: str,
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
    fixes: Mapping[str, str] | None = None,
) -> QuestionKey:
    """Normalised text for joining: placeholder and suffixes stripped, spacing collapsed, case folded."""
    core = _SPACE.sub(" ", strip_prompt(text, suffixes)).casefold()
    fixed = False
    for wrong, right in (fixes or {}).items():
        pattern = re.compile(rf"\b{re.escape(wrong.casefold())}\b")
        core, n = pattern.subn(right.casefold(), core)
        fixed = fixed or n > 0
    return QuestionKey(core, fixed)
