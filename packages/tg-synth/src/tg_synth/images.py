"""Input images: content hashes (memoised in the cache) for keys, bytes read only when a call needs them."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os

from tg_synth.cache import StepCache

_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"), (b"RIFF", "image/webp"))


def _mime(path: str, head: bytes) -> str:
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def image_hash(path: str, cache: StepCache | None = None) -> str:
    """The SHA-256 of a local image file, memoised by (path, size, mtime); ``OSError`` if unreadable."""
    st = os.stat(path)
    if cache is not None:
        known = cache.image_hash(path, st.st_size, st.st_mtime_ns)
        if known is not None:
            return known
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if cache is not None:
        cache.put_image_hash(path, st.st_size, st.st_mtime_ns, digest)
    return digest


class ImageRef:
    """One image of a run: its path and hash, and its data URL once a chat call asks for it."""

    def __init__(self, path: str, sha256: str) -> None:
        self.path = path
        self.sha256 = sha256
        self._url: str | None = None

    @classmethod
    def open(cls, path: str, cache: StepCache | None = None) -> ImageRef:
        return cls(path, image_hash(path, cache))

    def data_url(self) -> str:
        if self._url is None:
            with open(self.path, "rb") as f:
                data = f.read()
            self._url = f"data:{_mime(self.path, data[:16])};base64,{base64.b64encode(data).decode('ascii')}"
        return self._url


def decode_data_url(url: str) -> bytes:
    """The bytes of a ``data:...;base64,`` URL (for endpoints that check what they were sent)."""
    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError("not a base64 data URL")
    return base64.b64decode(url.split(";base64,", 1)[1], validate=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
