"""tg-infer throughput: batched decoding and the dynamically batching server, against one at a time.

- ``batched_rec``: REC samples/s of the shapes world's held-out split, decoded 16 at a time
  (left-padded, KV cache) against the same requests decoded one at a time; both greedy, same
  model, same token budget, and the answers must be identical.
- ``server_concurrent``: requests/s of the HTTP server (``POST /v1/chat/completions`` with a data
  URL image) when 16 clients send at once, against one client sending the same requests in turn.

Uses the ``tiny`` preset (random weights: it never stops early, so every request decodes its full
budget in both runs). Prints one JSON object per comparison: ``{"name", "ours", "reference",
"unit", "ratio"}``. Run: ``uv run python benchmarks/bench_infer.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn
from PIL import Image

from tg_data.io import read_parquet
from tg_data.shapes import write_shapes_dataset
from tg_infer.predictor import Predictor
from tg_infer.requests import Request
from tg_infer.server import ServerSettings, create_app
from tg_model.presets import build_model

BATCH = 16
CLIENTS = 16


def report(name: str, ours: float, reference: float, unit: str) -> None:
    print(json.dumps({"name": name, "ours": round(ours, 2), "reference": round(reference, 2), "unit": unit,
                      "ratio": round(ours / reference, 3)}), flush=True)


def rec_requests(root: Path, n: int, max_new_tokens: int) -> list[Request]:
    scenes = max(4, n // 2)
    write_shapes_dataset(str(root), {"test": scenes}, seed=11, pope_splits=())
    samples = [s for s in read_parquet(str(root / "test.parquet")) if s.task == "rec"]
    while len(samples) < n:
        samples += samples
    requests = []
    for s in samples[:n]:
        with Image.open(root / s.image) as im:
            image = im.convert("RGB")
        prompt = next(t.text for t in s.turns if t.role == "user")
        requests.append(Request.ask(prompt, image, max_new_tokens=max_new_tokens, id=s.id))
    return requests


def bench_batched_rec(predictor: Predictor, requests: list[Request]) -> None:
    predictor.generate(requests[:2])  # warm-up
    start = time.perf_counter()
    batched = predictor.generate(requests)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    alone = [predictor.generate([r])[0] for r in requests]
    t_alone = time.perf_counter() - start
    if [g.token_ids for g in batched] != [g.token_ids for g in alone]:
        raise SystemExit("batched and one-at-a-time greedy answers differ")
    n = len(requests)
    report("batched_rec", n / t_batched, n / t_alone, "samples/s")


def _body(request: Request, name: str) -> dict:
    buf = io.BytesIO()
    request.image.save(buf, format="PNG")  # type: ignore[union-attr]
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    text = request.turns[0].text.replace("<image>\n", "")
    return {"model": name, "max_tokens": request.max_new_tokens,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": text}]}]}


async def _concurrent(base: str, bodies: list[dict], clients: int) -> float:
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            r = await http.post(f"{base}/v1/chat/completions", json=body)
            r.raise_for_status()

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - start


def bench_server(predictor: Predictor, requests: list[Request]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ServerSettings(max_batch_size=BATCH, batch_wait_ms=20, model_name="bench")
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    bodies = [_body(r, "bench") for r in requests]
    try:
        with httpx.Client(timeout=600) as http:
            http.post(f"{base}/v1/chat/completions", json=bodies[0]).raise_for_status()  # warm-up
            start = time.perf_counter()
            for body in bodies:
                http.post(f"{base}/v1/chat/completions", json=body).raise_for_status()
            t_sequential = time.perf_counter() - start
        t_concurrent = asyncio.run(_concurrent(base, bodies, CLIENTS))
    finally:
        server.should_exit = True
        thread.join(30)
    n = len(bodies)
    report("server_concurrent", n / t_concurrent, n / t_sequential, "requests/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for smoke tests")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n, max_new_tokens = (32, 16) if args.quick else (64, 48)
    model, tokenizer = build_model("tiny")
    predictor = Predictor(model, tokenizer, device=args.device, max_batch_size=BATCH, name="tiny")
    with tempfile.TemporaryDirectory() as d:
        requests = rec_requests(Path(d), n, max_new_tokens)
        bench_batched_rec(predictor, requests)
        bench_server(predictor, requests)
    print(f"({n} REC requests of {max_new_tokens} new tokens, batch {BATCH}, {CLIENTS} clients, "
          f"{predictor.device}, {predictor.dtype}, {torch.get_num_threads()} threads)", file=sys.stderr)


if __name__ == "__main__":
    main()
