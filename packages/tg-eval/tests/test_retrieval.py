from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from tg_eval.errors import EvalError
from tg_eval.retrieval import fold_metrics, load_similarity, recall_metrics, score_retrieval


def loop_metrics(sim: np.ndarray, k: int = 5) -> dict[str, float]:
    """The rules written out as plain loops: caption j belongs to image j // k; a query's rank is
    its match's position in the candidates sorted by score (ties: lower index first); an image
    ranks by the best of its k captions; R@K = % of queries with rank < K; medr = floor(median)+1."""
    n_img, n_cap = sim.shape
    i2t = []
    for i in range(n_img):
        order = sorted(range(n_cap), key=lambda j: (-sim[i, j], j))
        i2t.append(min(pos for pos, j in enumerate(order) if j // k == i))
    t2i = []
    for j in range(n_cap):
        order = sorted(range(n_img), key=lambda i: (-sim[i, j], i))
        t2i.append(order.index(j // k))
    out = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for K in (1, 5, 10):
            out[f"{name}_r{K}"] = 100 * sum(r < K for r in ranks) / len(ranks)
        out[f"{name}_medr"] = math.floor(statistics.median(ranks)) + 1
    out["rsum"] = sum(out[f"{d}_r{K}"] for d in ("i2t", "t2i") for K in (1, 5, 10))
    return out


def test_hand_worked_two_images() -> None:
    # 2 images x 10 captions (captions 0-4 belong to image 0, 5-9 to image 1).
    sim = np.zeros((2, 10))
    sim[0] = [0.1, 0.9, 0.0, 0.0, 0.0, 0.95, 0.0, 0.0, 0.0, 0.0]  # best own caption (1) ranks 2nd
    sim[1] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]  # own caption 5 ranks 1st
    m = recall_metrics(sim, per_image=5)
    # image->text ranks [1, 0]: R@1 = 50 %, R@5 = R@10 = 100 %.
    assert (m["i2t_r1"], m["i2t_r5"], m["i2t_r10"]) == (50.0, 100.0, 100.0)
    # text->image: caption 0 (0.1 vs 0.0) -> image 0 first, rank 0; captions 2,3,4 tie at 0.0 with
    # image 1 -> image 0 (lower index) first, rank 0; caption 1 rank 0; caption 5: 0.95 vs 0.5 ->
    # image 0 first, rank 1; captions 6-9 tie -> image 0 first, rank 1 for image 1.
    # Ranks [0,0,0,0,0,1,1,1,1,1]: R@1 = 50 %, R@5 = 100 %; medr = floor(0.5) + 1 = 1.
    assert m["t2i_r1"] == 50.0 and m["t2i_r5"] == 100.0 and m["t2i_medr"] == 1.0
    assert m["rsum"] == 50 + 100 + 100 + 50 + 100 + 100


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("quantise", [False, True])
def test_recall_matches_the_loop_implementation(seed: int, quantise: bool) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    sim = rng.normal(size=(n, 5 * n)).astype(np.float32)
    sim[np.arange(n).repeat(5), np.arange(5 * n)] += 1.5  # make matches likelier to rank high
    if quantise:  # many ties
        sim = np.round(sim, 0)
    ours, ref = recall_metrics(sim), loop_metrics(sim)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value), key


def test_coco_1k_is_the_mean_of_five_folds() -> None:
    rng = np.random.default_rng(3)
    n = 50  # five folds of 10 images, 50 captions each
    sim = rng.normal(size=(n, 5 * n))
    sim[np.arange(n).repeat(5), np.arange(5 * n)] += 1.0
    folds = [loop_metrics(sim[f * 10 : (f + 1) * 10, f * 50 : (f + 1) * 50]) for f in range(5)]
    ours = fold_metrics(sim, folds=5)
    for key in folds[0]:
        assert ours[key] == pytest.approx(sum(f[key] for f in folds) / 5), key
    # Cross-fold captions are never candidates: a fold's image must not see other folds' captions.
    sim2 = sim.copy()
    sim2[0, 100:] = 99.0  # huge scores for image 0 against captions outside its fold
    assert fold_metrics(sim2, folds=5)["i2t_r1"] == ours["i2t_r1"]


def test_protocol_sizes_are_checked_and_custom_accepts_any(tmp_path: Path) -> None:
    sim = np.eye(4).repeat(5, axis=1)  # 4 x 20: each image scores 1 on its own captions only
    with pytest.raises(EvalError, match="flickr30k-1k needs a 1000 x 5000"):
        score_retrieval(sim, "flickr30k-1k")
    with pytest.raises(EvalError, match="unknown retrieval protocol"):
        score_retrieval(sim, "coco-2k")
    result = score_retrieval(sim, "custom")
    assert result.rows["custom"]["i2t_r1"] == 100.0
    # text->image: each caption's own image scores 1, the others 0 -> rank 0 for all.
    assert result.rows["custom"]["t2i_r1"] == 100.0 and result.rows["custom"]["rsum"] == 600.0
    with pytest.raises(EvalError, match="5 captions per image"):
        score_retrieval(np.zeros((4, 19)), "custom")
    np.savez(tmp_path / "emb.npz", images=np.eye(4), texts=np.eye(4).repeat(5, axis=0))
    assert load_similarity(tmp_path / "emb.npz").shape == (4, 20)
