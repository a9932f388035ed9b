"""Which option a multiple-choice answer picked, or ``None`` when it cannot be told.

Rules, first match wins: the answer is a letter ("B", "(B)", "B."); it starts with a letter
followed by ".", ":" or ")"; it says "answer is B" / "answer: B" / "option B"; it equals one
option's text; it contains exactly one option's text. "A cat sits" is not option A: a leading
letter counts only with punctuation after it. No random guess is ever made for a miss.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_ONLY_LETTER = re.compile(r"^\(?\s*([A-Z])\s*\)?\s*[.:)]?$")
_LEADING = re.compile(r"^(?:\(([A-Z])\)|([A-Z])[.:)])(?:\s|$)")
_SAYS = re.compile(r"\b(?:answer\s+is|answer\s*:|option|choice)\s*:?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def _plain(text: str) -> str:
    return _SPACE.sub(" ", text.strip().rstrip(".").strip()).casefold()


def extract_option(answer: str, options: Sequence[str]) -> str | None:
    """The letter (A, B, ...) of the option ``answer`` chose among ``options``, or ``None``."""
    letters = LETTERS[: len(options)]
    text = answer.strip()
    for pattern in (_ONLY_LETTER, _LEADING):
        m = pattern.match(text)
        if m:
            letter = next(g for g in m.groups() if g)
            return letter if letter in letters else None
    m = _SAYS.search(text)
    if m and m.group(1).upper() == m.group(1) and m.group(1) in letters:
        return m.group(1)
    plain = _plain(text)
    texts = [_plain(o) for o in options]
    if plain in texts and texts.count(plain) == 1:
        return letters[texts.index(plain)]
    contained = [i for i, t in enumerate(texts) if t and re.search(rf"(?<!\w){re.escape(t)}(?!\w)", plain)]
    # Drop options whose text is part of a longer contained option ("red" inside "dark red").
    contained = [i for i in contained if not any(j != i and texts[i] in texts[j] for j in contained)]
    if len(contained) == 1:
        return letters[contained[0]]
    return None
