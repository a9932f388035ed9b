"""Retrieval ranking speed: tg-eval's blocked comparison counts vs the per-query argsort loop of
VSE++'s ``i2t``/``t2i`` (the implementation retrieval papers evaluate with), on the same matrix.

Prints one JSON line: rate = queries (images + captions) ranked per second.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tg_eval.retrieval import image_to_text_ranks, text_to_image_ranks


def reference_ranks(sim: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    n_img = sim.shape[0]
    i2t = np.zeros(n_img, dtype=np.int64)
    for i in range(n_img):
        inds = np.argsort(sim[i])[::-1]
        i2t[i] = min(np.where(inds == j)[0][0] for j in range(k * i, k * i + k))
    t2i = np.zeros(k * n_img, dtype=np.int64)
    sims_t = sim.T
    for j in range(k * n_img):
        inds = np.argsort(sims_t[j])[::-1]
        t2i[j] = np.where(inds == j // k)[0][0]
    return i2t, t2i


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a 200-image matrix instead of Flickr30K's 1000")
    args = ap.parse_args()
    n = 200 if args.quick else 1000
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(n, 5 * n)).astype(np.float32)
    sim[np.arange(n).repeat(5), np.arange(5 * n)] += 2.0
    queries = 6 * n

    t = time.perf_counter()
    ours = image_to_text_ranks(sim), text_to_image_ranks(sim)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    ref = reference_ranks(sim)
    ref_s = time.perf_counter() - t
    if not (np.array_equal(ours[0], ref[0]) and np.array_equal(ours[1], ref[1])):
        raise SystemExit("rank mismatch between tg-eval and the reference loop")
    rate_ours, rate_ref = queries / ours_s, queries / ref_s
    print(json.dumps({"name": f"retrieval_ranks_{n}x{5 * n}", "ours": round(rate_ours, 1), "reference": round(rate_ref, 1),
                      "unit": "queries/s", "ratio": round(rate_ours / rate_ref, 3)}))


if __name__ == "__main__":
    main()
