"""The ``tg-synth`` command: run a synthesis config, show a run's status, print the prompts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tg_data.io import DataError
from tg_synth.backends.base import FatalBackendError
from tg_synth.cache import CacheBusyError
from tg_synth.config import ConfigError, load_config, shipped_configs
from tg_synth.prompting import PromptError, all_templates, get_template

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
err = Console(stderr=True)
USER_ERRORS = (ConfigError, DataError, PromptError, CacheBusyError, FatalBackendError, FileNotFoundError,
               sqlite3.DatabaseError)


def _fail(e: BaseException) -> None:
    err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def run(
    config: Annotated[str | None, typer.Argument(help="config TOML file, or a shipped config name (see `tg-synth configs`)")] = None,
    shapes: Annotated[bool, typer.Option("--shapes", help="run the shipped shapes-world config")] = False,
    out: Annotated[str | None, typer.Option(help="output directory (default: [output] dir)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: --set qa.rec=4")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    retry_quarantined: Annotated[bool, typer.Option(help="try quarantined records again")] = False,
) -> None:
    """Run (or resume) the pipeline: recognise, ground, relate, generate, filter, write shards."""
    from tg_synth.run import run as run_pipeline

    if (config is None) == (not shapes):
        _fail(ConfigError("give a CONFIG file or --shapes (one of them)"))
    try:
        cfg = load_config(config or "shapes", set_ or [])
        manifest = run_pipeline(cfg, out, progress=progress, retry_quarantined=retry_quarantined)
    except USER_ERRORS as e:
        _fail(e)
    except KeyboardInterrupt:
        err.print("interrupted: finished steps are kept in the cache; run the same command again to resume")
        raise typer.Exit(130) from None
    out_dir = Path(out or cfg.output.dir)
    console = Console(soft_wrap=True)
    console.print(f"wrote {out_dir}: stage 2 {manifest['stage2']['samples']} samples, stage 3 "
                  f"{manifest['stage3']['samples']} samples; {manifest['failures']['total']} quarantined; "
                  f"image paths {manifest['image_paths']}" + (f" {manifest['image_root']}" if manifest["image_root"] else ""))
    console.print("tasks: " + ", ".join(f"{t} {n}" for t, n in manifest["tasks"].items()))


@app.command()
def status(
    run_dir: Annotated[str, typer.Argument(help="a run's output directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print the status as JSON")] = False,
) -> None:
    """Counts per step, per task type, filtered by reason, failures and cost of a run."""
    from tg_synth.status import print_status, read_status

    try:
        s = read_status(run_dir)
    except USER_ERRORS as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
    else:
        print_status(s)


@app.command()
def prompts(
    step: Annotated[str | None, typer.Argument(help="only this step's template")] = None,
    version: Annotated[str | None, typer.Option(help="a version other than the newest")] = None,
) -> None:
    """Print the versioned prompt templates the pipeline uses."""
    try:
        chosen = [get_template(step, version)] if step else list(all_templates().values())
    except PromptError as e:
        _fail(e)
    for t in chosen:
        typer.echo(f"===== {t.step} {t.version} ({t.id}) =====")
        typer.echo(t.text.rstrip() + "\n")


@app.command()
def configs() -> None:
    """List the configs shipped with the package."""
    for name, path in sorted(shipped_configs().items()):
        typer.echo(f"{name}\t{path}")


@app.command("serve-oracle")
def serve_oracle(
    shapes_root: Annotated[str, typer.Argument(help="a tg-data shapes dataset")],
    split: Annotated[str, typer.Option(help="the split whose scenes it answers for")] = "train",
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: any free port)")] = 0,
    latency: Annotated[float, typer.Option(help="seconds added to every answer")] = 0.0,
    fault_rate: Annotated[float, typer.Option(help="share of calls that fail (429, 500, timeout, bad JSON)")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of the oracle and of the faults")] = 0,
    log: Annotated[str | None, typer.Option(help="append every call to this JSON Lines file")] = None,
) -> None:
    """Serve an OpenAI-compatible chat endpoint on 127.0.0.1 answering from shapes-world truth."""
    from tg_synth.loopback import ChatEndpoint, FaultPlan, LoopbackServer, OracleAnswerer

    try:
        answerer = OracleAnswerer(shapes_root, split, seed=seed)
    except (FileNotFoundError, ValueError) as e:
        _fail(FileNotFoundError(f"{shapes_root}: cannot read split {split!r} of a shapes dataset ({e})"))
    endpoint = ChatEndpoint(answerer, latency, FaultPlan(rate=fault_rate, seed=seed), log)
    server = LoopbackServer(endpoint, port)

    async def main() -> None:
        import threading

        ready = threading.Event()
        task = asyncio.create_task(server.serve(ready))
        while not ready.is_set():
            await asyncio.sleep(0.01)
        typer.echo(f"listening on {server.base_url}", nl=True)
        await task

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.close()


if __name__ == "__main__":
    app()
