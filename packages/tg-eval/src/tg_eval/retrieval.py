"""Image-text retrieval (GRM): R@1/5/10 both ways, rSum and median rank from a similarity matrix.

``sim[i, j]`` scores image i against caption j; caption j belongs to image ``j // k`` (k = 5 for
Flickr30K and COCO). A query's rank is the number of candidates ranked above its match (0 is
best); an image's rank is that of the best of its k captions. R@K is the percentage of queries
with rank < K, medr is ``floor(median(rank)) + 1`` (VSE++'s convention). Ties are broken by
index: an equal score at a lower index ranks first, as a stable sort would place it.

Protocols: Flickr30K 1K (1000 test images), COCO 5K (all 5000 test images) and COCO 1K (the 5000
split into five folds of 1000 images, every number averaged over the folds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tg_eval.errors import EvalError
from tg_eval.result import EvalResult, Unit

KS: tuple[int, ...] = (1, 5, 10)
#: protocol -> (images in the matrix, folds)
PROTOCOLS: dict[str, tuple[int, int]] = {"flickr30k-1k": (1000, 1), "coco-1k": (5000, 5), "coco-5k": (5000, 1)}
METRICS: tuple[str, ...] = (*(f"i2t_r{k}" for k in KS), *(f"t2i_r{k}" for k in KS), "rsum", "i2t_medr", "t2i_medr")
_BLOCK_ELEMENTS = 1 << 24  # bound the temporary boolean arrays to ~16M elements


def _check(sim: np.ndarray, per_image: int) -> tuple[int, int]:
    if sim.ndim != 2:
        raise EvalError(f"the similarity matrix must be 2-D (images x captions), got shape {sim.shape}")
    n_img, n_cap = sim.shape
    if n_img == 0 or n_cap != per_image * n_img:
        raise EvalError(
            f"a {n_img} x {n_cap} similarity matrix does not have {per_image} captions per image "
            f"(expected {n_img} x {per_image * n_img}; caption j must belong to image j // {per_image})"
        )
    if not np.isfinite(sim).all():
        raise EvalError("the similarity matrix holds NaN or infinite values")
    return n_img, n_cap


def image_to_text_ranks(sim: np.ndarray, per_image: int = 5) -> np.ndarray:
    """Rank (0-based) of each image's best-ranked own caption among all captions."""
    n_img, n_cap = _check(sim, per_image)
    ranks = np.empty(n_img, dtype=np.int64)
    idx = np.arange(n_cap)
    step = max(1, _BLOCK_ELEMENTS // (n_cap * per_image))
    for start in range(0, n_img, step):
        rows = sim[start : start + step]  # (b, C)
        b = len(rows)
        own_idx = (np.arange(start, start + b)[:, None] * per_image) + np.arange(per_image)[None, :]  # (b, k)
        own = np.take_along_axis(rows, own_idx, axis=1)  # (b, k)
        higher = (rows[:, None, :] > own[:, :, None]).sum(axis=2)
        tied_before = ((rows[:, None, :] == own[:, :, None]) & (idx[None, None, :] < own_idx[:, :, None])).sum(axis=2)
        ranks[start : start + b] = (higher + tied_before).min(axis=1)
    return ranks


def text_to_image_ranks(sim: np.ndarray, per_image: int = 5) -> np.ndarray:
    """Rank (0-based) of each caption's image among all images."""
    n_img, n_cap = _check(sim, per_image)
    ranks = np.empty(n_cap, dtype=np.int64)
    img_idx = np.arange(n_img)[:, None]
    step = max(1, _BLOCK_ELEMENTS // n_img)
    for start in range(0, n_cap, step):
        cols = sim[:, start : start + step]  # (N, b)
        owner = np.arange(start, start + cols.shape[1]) // per_image  # (b,)
        own = cols[owner, np.arange(cols.shape[1])]  # (b,)
        higher = (cols > own[None, :]).sum(axis=0)
        tied_before = ((cols == own[None, :]) & (img_idx < owner[None, :])).sum(axis=0)
        ranks[start : start + cols.shape[1]] = higher + tied_before
    return ranks


def recall_metrics(sim: np.ndarray, per_image: int = 5) -> dict[str, float]:
    """R@1/5/10 (percent) both ways, rSum, and median ranks, for one matrix."""
    i2t = image_to_text_ranks(sim, per_image)
    t2i = text_to_image_ranks(sim, per_image)
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in KS:
            out[f"{name}_r{k}"] = 100.0 * float(np.mean(ranks < k))
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in KS)
    out["i2t_medr"] = float(np.floor(np.median(i2t)) + 1)
    out["t2i_medr"] = float(np.floor(np.median(t2i)) + 1)
    return out


def fold_metrics(sim: np.ndarray, folds: int, per_image: int = 5) -> dict[str, float]:
    """Every metric averaged over ``folds`` equal blocks of images (with their own captions only)."""
    n_img, _ = _check(sim, per_image)
    if folds < 1 or n_img % folds:
        raise EvalError(f"{n_img} images cannot be split into {folds} equal folds")
    size = n_img // folds
    per_fold = [
        recall_metrics(sim[f * size : (f + 1) * size, f * size * per_image : (f + 1) * size * per_image], per_image)
        for f in range(folds)
    ]
    return {m: float(np.mean([p[m] for p in per_fold])) for m in METRICS}


def load_similarity(path: str | Path) -> np.ndarray:
    """A ``.npy`` matrix, or a ``.npz`` with ``sim``, or with ``images`` and ``texts`` embeddings (dot product)."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"{path}: no such file")
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise EvalError(f"{path}: not a NumPy .npy/.npz file ({e})") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        if "sim" in data:
            return data["sim"]
        if "images" in data and "texts" in data:
            return data["images"] @ data["texts"].T
        raise EvalError(f"{path}: a .npz needs 'sim', or 'images' and 'texts' embeddings; it has {list(data.keys())}")


def score_retrieval(
    sim: np.ndarray, protocol: str, name: str = "similarity", per_image: int = 5
) -> EvalResult:
    """Score one protocol; ``custom`` takes any ``N x kN`` matrix as a single fold."""
    if protocol == "custom":
        images, folds = sim.shape[0], 1
    elif protocol in PROTOCOLS:
        images, folds = PROTOCOLS[protocol]
    else:
        raise EvalError(f"unknown retrieval protocol {protocol!r}; expected one of {[*PROTOCOLS, 'custom']}")
    if sim.ndim != 2 or sim.shape[0] != images:
        raise EvalError(
            f"{protocol} needs a {images} x {images * per_image} similarity matrix, got {'x'.join(map(str, sim.shape))}"
        )
    metrics = fold_metrics(sim, folds, per_image)
    units = {m: Unit.RECALL for m in METRICS} | {"i2t_medr": Unit.RANK, "t2i_medr": Unit.RANK}
    return EvalResult(
        benchmark="retrieval",
        name=name,
        units=units,
        rows={protocol: metrics},
        summary={m: metrics[m] for m in (*(f"i2t_r{k}" for k in KS), *(f"t2i_r{k}" for k in KS), "rsum")},
        counts={"images": int(sim.shape[0]), "captions": int(sim.shape[1]), "folds": folds},
        notes=[f"mean over {folds} folds of {images // folds} images"] if folds > 1 else [],
    )
