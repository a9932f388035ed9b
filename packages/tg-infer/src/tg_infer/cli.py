"""``tg-infer``: ground, describe, chat, answer files, draw attention maps, serve and demo a model.

Every command takes ``--model DIR`` (or ``$TG_INFER_MODEL``): a directory written by
``save_pretrained``. Mistakes (a missing file, a bad box, an unknown option value) end with one
line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tg_infer.errors import InferError

app = typer.Typer(
    help="Run a TinyGroundingGPT model: ground expressions, describe and chat about images, answer JSON Lines "
    "files, draw attention maps, serve an OpenAI-compatible API, or open the web demo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

ModelDir = Annotated[Path, typer.Option("--model", envvar="TG_INFER_MODEL",
                                        help="Model directory (save_pretrained output).")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: cuda if available).")]
Dtype = Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (default: bf16 on GPUs that support it, else fp32).")]
Threads = Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")]
Draw = Annotated[Path | None, typer.Option("--draw", help="Write the image with every predicted box and its label here.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
MaxNew = Annotated[int | None, typer.Option(help="Most tokens to generate.")]


def _user_errors() -> tuple[type[Exception], ...]:
    from tg_data.box import BoxError
    from tg_data.io import DataError
    from tg_data.schema import SampleError

    return (InferError, DataError, SampleError, BoxError, FileNotFoundError)


def user_errors(fn: F) -> F:
    """Turn a user's mistake into one clear line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _user_errors() as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _load(model: Path, device: str | None, dtype: str | None, threads: int | None, **kwargs: Any):
    import torch
    from transformers.utils import logging as hf_logging

    from tg_infer.predictor import Predictor

    hf_logging.disable_progress_bar()  # the CLI's output is the answer, not loading bars

    if threads is not None:
        if threads < 1:
            raise InferError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return Predictor.load(model, device=device, dtype=dtype, **kwargs)


def _draw(image_path: Path, boxes: list, out: Path) -> None:
    from tg_infer.draw import draw_boxes
    from tg_infer.images import open_image

    out.parent.mkdir(parents=True, exist_ok=True)
    draw_boxes(open_image(image_path), boxes).save(out)
    typer.echo(f"wrote {out}")


@app.command()
@user_errors
def ground(
    image: Annotated[Path, typer.Argument(help="The image.")],
    expression: Annotated[str, typer.Argument(help="Which object, e.g. 'the red circle on the left'.")],
    model: ModelDir,
    draw: Draw = None,
    as_json: AsJson = False,
    max_new_tokens: MaxNew = None,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
) -> None:
    """Find the object an expression refers to: its box in pixels and as the model's coordinate text."""
    from tg_infer.answers import FoundBox
    from tg_infer.predictor import REC_MAX_NEW_TOKENS

    predictor = _load(model, device, dtype, threads)
    g = predictor.ground(image, expression, max_new_tokens or REC_MAX_NEW_TOKENS)
    if as_json:
        typer.echo(json.dumps(g.to_dict(), ensure_ascii=False))
    elif g.found:
        x1, y1, x2, y2 = g.box  # type: ignore[misc]
        typer.echo(f"{expression}: pixels ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) {g.coords}")
        typer.echo(f"answer: {g.answer}")
    else:
        typer.echo(f"{expression}: no box in the answer")
        typer.echo(f"answer: {g.answer}")
    if draw is not None:
        boxes = [FoundBox(expression, g.normalized, g.box)] if g.found else []  # type: ignore[arg-type]
        _draw(image, boxes, draw)


@app.command()
@user_errors
def describe(
    image: Annotated[Path, typer.Argument(help="The image.")],
    model: ModelDir,
    prompt: Annotated[str | None, typer.Option(help="Ask this instead of the grounded description prompt.")] = None,
    draw: Draw = None,
    as_json: AsJson = False,
    max_new_tokens: MaxNew = None,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
) -> None:
    """Describe the image, with the coordinates of every object mentioned."""
    from tg_infer.chat import format_answer
    from tg_infer.predictor import DESCRIBE_MAX_NEW_TOKENS, DESCRIBE_PROMPT

    predictor = _load(model, device, dtype, threads)
    answer = predictor.describe(image, prompt or DESCRIBE_PROMPT, max_new_tokens or DESCRIBE_MAX_NEW_TOKENS)
    typer.echo(json.dumps(answer.to_dict(), ensure_ascii=False) if as_json else format_answer(answer))
    if draw is not None:
        _draw(image, answer.boxes, draw)


@app.command()
@user_errors
def chat(
    model: ModelDir,
    image: Annotated[Path | None, typer.Option(help="Start with this image (or use /image PATH).")] = None,
    max_new_tokens: MaxNew = None,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
) -> None:
    """Talk about an image. Commands: /image PATH, /object x1,y1,x2,y2 (pixels), /reset, /help, /quit."""
    from tg_infer.chat import ChatSession, Quit

    predictor = _load(model, device, dtype, threads)
    session = ChatSession(predictor, max_new_tokens=max_new_tokens or 256)
    if image is not None:
        typer.echo(session.set_image(image))
    interactive = sys.stdin.isatty()
    typer.echo("type a message, or /help for commands")
    while True:
        if interactive:
            typer.echo("> ", nl=False)
        line = sys.stdin.readline()
        if not line:
            break
        try:
            reply = session.handle(line)
        except Quit:
            break
        except _user_errors() as e:  # a bad command does not end the conversation
            typer.echo(f"error: {e}", err=True)
            continue
        if reply:
            typer.echo(reply)


@app.command()
@user_errors
def batch(
    input_file: Annotated[Path, typer.Argument(metavar="IN.jsonl", help="Requests {id, prompt|messages, image, objects}.")],
    output_file: Annotated[Path, typer.Argument(metavar="OUT.jsonl", help="Answers, appended; rerun to resume.")],
    model: ModelDir,
    image_root: Annotated[Path | None, typer.Option(help="Folder relative image paths start from (default: IN's folder).")] = None,
    batch_size: Annotated[int, typer.Option(help="Requests decoded together.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Token budget for requests that give none.")] = 64,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
) -> None:
    """Answer a JSON Lines file of requests with batched decoding; ids already in OUT are skipped."""
    from tg_infer.batchfile import run_batch

    predictor = _load(model, device, dtype, threads, max_batch_size=batch_size)
    stats = run_batch(predictor, input_file, output_file, image_root, batch_size, max_new_tokens,
                      progress=True)
    note = " (dropped a line cut off by an earlier run)" if stats.recovered_partial_line else ""
    typer.echo(f"{stats.answered} answered, {stats.skipped} already done, {stats.total} in all -> {output_file}{note}")


@app.command()
@user_errors
def attention(
    image: Annotated[Path, typer.Argument(help="The image.")],
    prompt: Annotated[str, typer.Argument(help="The question.")],
    model: ModelDir,
    out: Annotated[Path, typer.Option(help="Where to write the heatmap PNG.")],
    answer: Annotated[str | None, typer.Option(help="Explain this answer instead of the model's own.")] = None,
    rows: Annotated[str, typer.Option(help="Attention from: answer, text, coords or objects.")] = "answer",
    obj: Annotated[list[str] | None, typer.Option("--object", help="x1,y1,x2,y2 (pixels): an object image for the prompt's <object> (repeatable).")] = None,
    alpha: Annotated[float, typer.Option(help="Heatmap opacity.")] = 0.5,
    grid_out: Annotated[Path | None, typer.Option(help="Also write the grid as JSON.")] = None,
    max_new_tokens: MaxNew = None,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
) -> None:
    """Last-layer attention from the answer's tokens to the image patches, laid over the image."""
    from tg_infer.chat import parse_pixel_box
    from tg_infer.images import open_image

    predictor = _load(model, device, dtype, threads)
    pil = open_image(image)
    objects = [parse_pixel_box(o, pil.width, pil.height) for o in obj or []]
    amap = predictor.attention(pil, prompt, answer=answer, rows=rows, objects=objects,
                               max_new_tokens=max_new_tokens or 128)
    out.parent.mkdir(parents=True, exist_ok=True)
    amap.save(str(out), alpha=alpha)
    r, c = amap.peak
    typer.echo(f"answer: {amap.answer}")
    typer.echo(f"attention from {len(amap.rows)} {rows} token(s); peak at patch row {r}, column {c} "
               f"({amap.grid[r, c]:.3f} of the mass); wrote {out}")
    if grid_out is not None:
        grid_out.write_text(json.dumps({"grid": amap.grid.tolist(), "rows": amap.rows, "tokens": amap.tokens,
                                        "answer": amap.answer, "kind": rows}))


@app.command()
@user_errors
def serve(
    model: ModelDir,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    allow_dir: Annotated[list[Path] | None, typer.Option(help="A directory whose images requests may name by path or file:// URL (repeatable).")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Most requests decoded together.")] = 16,
    batch_wait_ms: Annotated[float, typer.Option(help="How long the first request waits for others to join its batch.")] = 10.0,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 1024,
    default_max_tokens: Annotated[int, typer.Option(help="max_tokens for requests that give none.")] = 256,
    max_image_pixels: Annotated[int, typer.Option(help="Largest image (width x height) accepted.")] = 36_000_000,
    max_request_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 20 * 1024 * 1024,
    name: Annotated[str | None, typer.Option(help="Model name clients use (default: the directory's name).")] = None,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
) -> None:
    """Serve an OpenAI-compatible API: POST /v1/chat/completions, GET /v1/models, GET /health."""
    from tg_infer.server import ServerSettings
    from tg_infer.server import serve as run_server

    settings = ServerSettings(
        allowed_dirs=tuple(allow_dir or ()), max_request_bytes=max_request_bytes, max_image_pixels=max_image_pixels,
        default_max_tokens=default_max_tokens, max_tokens=max_tokens, max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms, model_name=name,
    )
    if default_max_tokens > max_tokens:
        raise InferError(f"--default-max-tokens {default_max_tokens} exceeds --max-tokens {max_tokens}")
    predictor = _load(model, device, dtype, threads, max_batch_size=max_batch_size)
    from tg_infer.images import PathPolicy

    PathPolicy(settings.allowed_dirs)  # a missing --allow-dir is reported before the server starts
    run_server(predictor, settings, host=host, port=port)


@app.command()
@user_errors
def demo(
    model: ModelDir,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 256,
    device: Device = None,
    dtype: Dtype = None,
    threads: Threads = None,
) -> None:
    """Open the web demo: upload an image, ask, see the answer's boxes; or ask about a region you mark."""
    from tg_infer.demo import launch

    predictor = _load(model, device, dtype, threads)
    typer.echo(f"demo on http://{host}:{port}")
    launch(predictor, host=host, port=port, max_new_tokens=max_new_tokens, block=True)


if __name__ == "__main__":
    app()
