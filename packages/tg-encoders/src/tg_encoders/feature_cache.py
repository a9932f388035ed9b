"""Frozen towers' features, remembered by image content, and the size-bounded store behind them.

Every stage of the method trains with the towers frozen, so an image seen again gives the same
patch features. On a small dataset seen for many epochs (the shapes world on a CPU) the towers'
forward pass is a tenth or more of each training step; remembering its output removes that
without changing what the model computes. The key is the pixels themselves (a digest of the
tensor's bytes), so no file name or sample id has to reach the model, and a changed image can
never be answered from the cache.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

from tg_encoders.errors import EncoderError


def pixel_digest(pixels: torch.Tensor) -> bytes:
    """A digest of one tensor's shape, dtype and values."""
    data = pixels.detach().contiguous().cpu()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(data.shape)}:{data.dtype}".encode())
    h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def _nbytes(value: torch.Tensor) -> int:
    return value.numel() * value.element_size()


class TensorLRU:
    """Tensors by key, least recently used dropped first once they hold more than ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise EncoderError(f"a tensor cache needs a positive size in bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._store: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: Hashable) -> torch.Tensor | None:
        value = self._store.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._store.move_to_end(key)
        return value

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        """Keep ``value`` (a tensor larger than the whole cache is not kept)."""
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        old = self._store.pop(key, None)
        if old is not None:
            self.bytes -= _nbytes(old)
        self._store[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._store.popitem(last=False)
            self.bytes -= _nbytes(dropped)

    def clear(self) -> None:
        self._store.clear()
        self.bytes = 0


class FeatureCache(TensorLRU):
    """Per-image features of frozen towers, keyed by the image's pixels.

    The caller guarantees that ``compute`` does not change while the cache is in use (frozen
    towers); ``clear()`` forgets everything.
    """

    def features(self, pixels: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``compute(pixels)``, with images already seen answered from the cache; one call for the rest."""
        keys = [pixel_digest(row) for row in pixels]
        rows: list[torch.Tensor | None] = [self.get(key) for key in keys]
        first_row: dict[bytes, int] = {}  # an image repeated in the batch is computed once
        for i, row in enumerate(rows):
            if row is None:
                first_row.setdefault(keys[i], i)
        if first_row:
            computed = compute(pixels[list(first_row.values())]).detach()
            position = {key: j for j, key in enumerate(first_row)}
            for key, value in zip(first_row, computed, strict=True):
                self.put(key, value.clone())
            for i, row in enumerate(rows):
                if row is None:
                    rows[i] = computed[position[keys[i]]]
        return torch.stack(rows)  # type: ignore[arg-type]
