"""Stream the elements of a top-level JSON array, so a 1 GB LLaVA or Visual Genome file never sits
in memory whole.

The file is read in chunks and each element is decoded by the standard library's C scanner
(``json.JSONDecoder.raw_decode``); only the current element and one chunk are held at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import fsspec

from tg_data.io import DataError

CHUNK_CHARS = 1 << 20
# An element may span chunks; past this size it is treated as malformed rather than read on forever.
MAX_ELEMENT_CHARS = 256 << 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A parse error this far before the end of the buffer cannot be a cut-off element.
_TRUNCATION_MARGIN = 16


def iter_json_array(path: str, chunk_chars: int | None = None) -> Iterator[tuple[int, int, Any]]:
    """``(index, line, element)`` for each element of the JSON array in ``path``.

    ``line`` is the 1-based line where the element starts; memory holds about three chunks of
    ``chunk_chars`` (default ``CHUNK_CHARS``) plus the element being decoded. A file that is not an array, or an element
    that is not valid JSON, raises ``DataError`` naming the file, the element index and the line.
    """
    chunk_chars = chunk_chars or CHUNK_CHARS
    decoder = json.JSONDecoder()
    try:
        f = fsspec.open(path, "rt", encoding="utf-8", compression="infer").open()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    with f:
        buf = f.read(chunk_chars)
        eof = not buf
        while not eof and not buf.strip():  # leading blank lines longer than a chunk
            more = f.read(chunk_chars)
            buf, eof = buf + more, not more
        pos = _WHITESPACE.match(buf, 0).end()  # type: ignore[union-attr]
        line = 1 + buf.count("\n", 0, pos)
        if pos >= len(buf) or buf[pos] != "[":
            found = buf[pos : pos + 20] or "an empty file"
            raise DataError(f"{path}: expected a JSON array starting with '[', found {found!r}")
        pos += 1
        index = 0
        expect_value = True  # after '[' or ','
        after_comma = False
        read_size = chunk_chars

        while True:
            end = _WHITESPACE.match(buf, pos).end()  # type: ignore[union-attr]
            line += buf.count("\n", pos, end)
            pos = end
            if pos == len(buf):
                if eof:
                    raise DataError(f"{path}:{line}: the file ends inside the array (no closing ']')")
                buf, pos, eof = _refill(f, buf, pos, chunk_chars)
                continue
            ch = buf[pos]
            if ch == "]":
                if after_comma:
                    raise DataError(f"{path}:{line}: a ',' before the closing ']' (trailing comma)")
                rest = buf[pos + 1 :] + ("" if eof else f.read())
                if rest.strip():
                    raise DataError(f"{path}:{line}: unexpected text after the closing ']': {rest.strip()[:20]!r}")
                return
            if ch == ",":
                if expect_value:
                    raise DataError(f"{path}:{line}: element {index} is missing (two commas, or a comma after '[')")
                pos += 1
                expect_value, after_comma = True, True
                continue
            if not expect_value:
                raise DataError(f"{path}:{line}: expected ',' or ']' after element {index - 1}, found {ch!r}")
            try:
                value, end = decoder.raw_decode(buf, pos)
                # A number cut by the chunk's end ("12" of "12.5") parses short: decode it again
                # once the buffer reaches past it. Containers and strings end on their own closer.
                complete = eof or end < len(buf) - _TRUNCATION_MARGIN or isinstance(value, (dict, list, str))
            except json.JSONDecodeError as e:
                truncated = e.msg.startswith("Unterminated string") or e.pos >= len(buf) - _TRUNCATION_MARGIN
                if eof or not truncated or len(buf) - pos > MAX_ELEMENT_CHARS:
                    where_line = line + buf.count("\n", pos, e.pos)
                    raise DataError(
                        f"{path}:{where_line}: element {index} is not valid JSON "
                        f"({e.msg}, {e.pos - pos} characters into the element)"
                    ) from None
                complete = False
            if not complete:
                read_size = max(read_size, len(buf) - pos)  # grow geometrically for a large element
                buf, pos, eof = _refill(f, buf, pos, read_size)
                continue
            yield index, line, value
            line += buf.count("\n", pos, end)
            pos = end
            index += 1
            expect_value, after_comma = False, False
            read_size = chunk_chars


def _refill(f: Any, buf: str, pos: int, size: int) -> tuple[str, int, bool]:
    more = f.read(size)
    return buf[pos:] + more, 0, not more


def json_top_level_kind(path: str) -> str:
    """``"array"``, ``"object"`` or ``"other"``: the first non-blank character of a JSON file."""
    with fsspec.open(path, "rt", encoding="utf-8", compression="infer") as f:
        head = f.read(4096).lstrip()
    return {"[": "array", "{": "object"}.get(head[:1], "other")
