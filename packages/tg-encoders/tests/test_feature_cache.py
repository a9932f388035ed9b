"""The size-bounded tensor store and the frozen-feature cache built on it."""

from __future__ import annotations

import pytest
import torch

from tg_encoders.errors import EncoderError
from tg_encoders.feature_cache import FeatureCache, TensorLRU, pixel_digest


class CountingTowers:
    """Stands for frozen towers: a fixed function of the pixels that records what it was given."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.weight = torch.randn(3 * 4 * 4, 5, generator=torch.Generator().manual_seed(0))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls.append(pixels.shape[0])
        return (pixels.flatten(1) @ self.weight).unsqueeze(1).expand(-1, 2, -1).contiguous()


def test_digest_tells_apart_values_dtypes_and_shapes():
    x = torch.rand(3, 4, 4)
    y = x.clone()
    y[2, 3, 3] += 1e-6
    assert pixel_digest(x) == pixel_digest(x.clone())
    assert len({pixel_digest(x), pixel_digest(y), pixel_digest(x.double()), pixel_digest(x.reshape(3, 16))}) == 4
    assert pixel_digest(x.bfloat16()) != pixel_digest(y.bfloat16().double())


def test_features_equal_the_towers_and_each_image_is_computed_once():
    towers, cache = CountingTowers(), FeatureCache(2**20)
    a = torch.rand(4, 3, 4, 4)
    first = cache.features(a, towers)
    assert torch.equal(first, towers(a)) and towers.calls == [4, 4]
    # two seen images, one new image given twice: one call, with the new image once
    b = torch.stack([a[1], torch.rand(3, 4, 4), a[3]])
    b = torch.cat([b, b[1:2]])
    again = cache.features(b, towers)
    assert towers.calls[-1] == 1
    assert torch.allclose(again, towers(b), atol=1e-6)
    assert (cache.hits, cache.misses, len(cache)) == (2, 6, 5)


def test_least_recently_used_go_first_and_the_bound_holds():
    item = torch.zeros(10)  # 40 bytes
    lru = TensorLRU(100)
    for key in "abc":
        lru.put(key, item.clone())
        if key == "b":
            assert lru.get("a") is not None  # a is now more recent than b
    assert len(lru) == 2 and lru.bytes == 80 and lru.get("b") is None and lru.get("a") is not None
    lru.put("huge", torch.zeros(100))  # larger than the whole store: not kept, nothing evicted
    assert lru.get("huge") is None and len(lru) == 2
    lru.put("a", torch.zeros(5))  # replacing a key counts its new size only
    assert lru.bytes == 60
    lru.clear()
    assert len(lru) == 0 and lru.bytes == 0


def test_a_cache_without_room_is_refused():
    with pytest.raises(EncoderError, match="positive size"):
        FeatureCache(0)
