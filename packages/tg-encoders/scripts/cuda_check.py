"""CUDA checks for tg-encoders that the CPU test suite cannot make.

For the tiny and the real-size (ViT-L/14-336 pair, random weights, nothing downloaded) encoders:
bf16 and fp16 autocast give the autocast dtype, finite features close to float32, and their
per-forward time and peak memory at batch 32; frozen towers get no gradient under autocast while
a downstream layer and the input do; weights cast to bf16 run without autocast. Prints one JSON
line per encoder and writes them all to ``$OUT/cuda_check.json`` (or the current folder).

    uv run python packages/tg-encoders/scripts/cuda_check.py
"""

from __future__ import annotations

import json
import os
import time

import torch
from torch import nn

from tg_encoders import build_encoder, real_encoder_specs, tiny_encoder_specs

dev = torch.device("cuda")
report: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
print(report, flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def timed(fn, n=10) -> float:
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def check(size: str) -> dict:
    torch.manual_seed(0)
    with dev:
        enc = build_encoder(real_encoder_specs() if size == "real" else tiny_encoder_specs(), load_weights=False)
    x = torch.rand(32, 3, enc.image_size, enc.image_size, device=dev)
    with torch.inference_mode():
        ref = enc(x)
        r: dict = {"fp32_shape": list(ref.shape), "fp32_dtype": str(ref.dtype), "fp32_ms": timed(lambda: enc(x)) * 1e3}
        for dt in (torch.bfloat16, torch.float16):
            with torch.autocast("cuda", dtype=dt):
                out = enc(x)
                torch.cuda.reset_peak_memory_stats()
                ms = timed(lambda: enc(x)) * 1e3
            r[str(dt)] = {
                "dtype": str(out.dtype), "finite": bool(torch.isfinite(out).all()), "rel_err_vs_fp32": rel(out, ref),
                "ms_per_forward_b32": ms, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
    # Frozen towers under autocast: no grads into them, grads into a downstream layer and the input.
    head = nn.Linear(enc.hidden_size, 8, device=dev)
    xi = x[:4].clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = head(enc(xi)).float().square().mean()
    loss.backward()
    r["grad"] = {
        "tower_grads_none": all(p.grad is None for p in enc.parameters()),
        "head_grad_finite": bool(torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0),
        "input_grad": bool(xi.grad is not None and xi.grad.abs().sum() > 0),
    }
    # Weights cast to bf16, no autocast.
    enc = enc.to(torch.bfloat16)
    with torch.inference_mode():
        out16 = enc(x)
    r["bf16_weights"] = {"dtype": str(out16.dtype), "rel_err_vs_fp32": rel(out16, ref)}
    return r


for size in ("tiny", "real"):
    report[size] = check(size)
    print(size, json.dumps(report[size]), flush=True)
    torch.cuda.empty_cache()

with open(os.path.join(os.environ.get("OUT", "."), "cuda_check.json"), "w") as f:
    json.dump(report, f, indent=2)
