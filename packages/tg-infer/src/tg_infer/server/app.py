"""FastAPI app: ``/v1/chat/completions`` (plain and streamed), ``/v1/models``, ``/health``.

Every request is checked before it reaches the model: body size, JSON shape, image source,
format and pixel count, token budget. A refused request gets a 4xx JSON error in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``) and the server carries on.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tg_infer.answers import find_boxes
from tg_infer.batcher import DynamicBatcher
from tg_infer.errors import InferError
from tg_infer.images import DEFAULT_MAX_PIXELS, ImageLimits, PathPolicy
from tg_infer.predictor import Predictor
from tg_infer.requests import Generation
from tg_infer.server.schema import parse_body, to_request

DEFAULT_MAX_REQUEST_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    allowed_dirs: tuple[str | Path, ...] = ()
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    default_max_tokens: int = 256
    max_tokens: int = 1024
    max_batch_size: int = 16
    batch_wait_ms: float = 10.0
    max_queue: int = 1024
    model_name: str | None = None


def error_response(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": kind, "param": param, "code": code}})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InferError("Content-Length is not a number", code="invalid_request") from None
        if size > limit:
            raise InferError(f"request body of {size} bytes exceeds the limit of {limit} bytes",
                             status=413, code="request_too_large")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise InferError(f"request body exceeds the limit of {limit} bytes", status=413, code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _boxes(generation: Generation, image: Any) -> list[dict]:
    if image is None:
        return []
    return [b.to_dict() for b in find_boxes(generation.text, image.width, image.height)]


def create_app(predictor: Predictor, settings: ServerSettings = ServerSettings()) -> FastAPI:
    """The app around ``predictor``; its batcher starts and stops with the app."""
    name = settings.model_name or predictor.name
    policy = PathPolicy(settings.allowed_dirs)
    limits = ImageLimits(max_pixels=settings.max_image_pixels,
                         max_file_bytes=min(settings.max_request_bytes, ImageLimits().max_file_bytes))
    batcher = DynamicBatcher(predictor, settings.max_batch_size, settings.batch_wait_ms, settings.max_queue)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)

    app = FastAPI(title="tg-infer", summary="OpenAI-compatible TinyGroundingGPT server", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.predictor = predictor

    @app.exception_handler(InferError)
    async def _infer_error(request: Request, exc: InferError) -> JSONResponse:
        return error_response(exc.status, str(exc), exc.code, exc.param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, str(exc.errors()[0].get("msg", exc)), "invalid_request")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": name, "device": str(predictor.device), "dtype": str(predictor.dtype),
                "queue": batcher.pending, **batcher.stats.to_dict()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list",
                "data": [{"id": name, "object": "model", "created": created, "owned_by": "tg-infer"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        raw = await _read_body(request, settings.max_request_bytes)
        body = parse_body(raw)
        if body.model is not None and body.model not in (name, "default"):
            raise InferError(f"model {body.model!r} is not served here; this server serves {name!r}",
                             status=404, code="model_not_found", param="model")
        req = await run_in_threadpool(to_request, body, policy, limits, settings.default_max_tokens,
                                      settings.max_tokens)
        prepared = await run_in_threadpool(predictor.prepare, req)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if not body.stream:
            generation = await asyncio.wrap_future(batcher.submit(prepared))
            return {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text},
                    "finish_reason": generation.finish_reason,
                    "boxes": _boxes(generation, prepared.image),
                }],
                "usage": _usage(generation),
            }
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        future = batcher.submit(prepared, on_text=lambda d: loop.call_soon_threadsafe(deltas.put_nowait, d))
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(deltas.put_nowait, None))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(completion_id, name, deltas, future, include_usage, prepared.image),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


def _usage(g: Generation) -> dict:
    return {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
            "total_tokens": g.prompt_tokens + g.completion_tokens}


def _chunk(completion_id: str, model: str, delta: dict, finish_reason: str | None = None, **extra: Any) -> str:
    payload = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, **extra}]}
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _sse(completion_id: str, model: str, deltas: asyncio.Queue, future: Any, include_usage: bool,
               image: Any) -> AsyncIterator[str]:
    yield _chunk(completion_id, model, {"role": "assistant", "content": ""})
    while (delta := await deltas.get()) is not None:
        yield _chunk(completion_id, model, {"content": delta})
    try:
        generation = future.result()
    except Exception as e:  # the batch failed after the stream began: say so in the stream
        message = {"error": {"message": str(e), "type": "server_error", "param": None, "code": "generation_failed"}}
        yield f"data: {json.dumps(message)}\n\n"
        yield "data: [DONE]\n\n"
        return
    yield _chunk(completion_id, model, {}, generation.finish_reason, boxes=_boxes(generation, image))
    if include_usage:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                   "model": model, "choices": [], "usage": _usage(generation)}
        yield f"data: {json.dumps(payload)}\n\n"
    yield "data: [DONE]\n\n"


def serve(predictor: Predictor, settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Run the server until interrupted."""
    import uvicorn

    uvicorn.run(create_app(predictor, settings), host=host, port=port, log_level=log_level)
