"""``tg-train``: run a recipe or a pipeline, list recipes, show the DeepSpeed config, the quickstart."""

from __future__ import annotations

import json
import sys
import tomllib
from typing import Annotated

import typer

from tg_data.io import DataError
from tg_train.recipe import RecipeError, load_recipe, shipped_recipes

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train TinyGroundingGPT: three stages on DeepSpeed ZeRO-2, from recipes.",
)

SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a recipe field: --set optim.lr=1e-4 (repeatable).")
]


# The deepspeed launcher puts --local_rank=N before the command's arguments (unless given
# --no_local_rank); the rank comes from the environment it also sets, so the option is accepted and ignored.
LocalRankOption = Annotated[int, typer.Option("--local_rank", "--local-rank", hidden=True)]

USER_ERRORS = (RecipeError, DataError, FileNotFoundError)


@app.callback()
def _options(local_rank: LocalRankOption = -1) -> None:
    """Train TinyGroundingGPT: three stages on DeepSpeed ZeRO-2, from recipes."""


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def run(
    recipe: Annotated[str, typer.Argument(help="A recipe file or the name of a shipped recipe.")],
    set_: SetOption = None,
) -> None:
    """Train one stage."""
    from tg_train.trainer import train

    try:
        r = load_recipe(recipe, set_ or [])
        result = train(r)
    except USER_ERRORS as e:
        _fail(str(e))
        return
    typer.echo(f"done: {result.global_step} steps, final loss {result.final_loss:.4f}, export {result.export_dir}")


@app.command()
def pipeline(
    path: Annotated[str, typer.Argument(help="A pipeline file or the name of a shipped pipeline.")],
    set_: SetOption = None,
) -> None:
    """Train the stages of a pipeline one after another."""
    from tg_train.pipeline import load_pipeline, run_pipeline

    try:
        results = run_pipeline(load_pipeline(path, set_ or []))
    except USER_ERRORS as e:
        _fail(str(e))
        return
    for r in results:
        typer.echo(f"{r.export_dir}: {r.global_step} steps, final loss {r.final_loss:.4f}")


@app.command()
def recipes() -> None:
    """List the shipped recipes and pipelines."""
    for name, path in sorted(shipped_recipes().items()):
        table = tomllib.loads(path.read_text())
        kind = "pipeline" if "stages" in table else f"stage {table.get('stage', '?')}"
        typer.echo(f"{name:<20} {kind:<9} {table.get('description', '')}")


@app.command("deepspeed-config")
def deepspeed_config_cmd(
    recipe: Annotated[str, typer.Argument(help="A recipe file or shipped recipe name.")],
    world_size: Annotated[int, typer.Option(help="Number of ranks to resolve the batch split for.")] = 8,
    bf16: Annotated[bool, typer.Option(help="Resolve as if on GPUs that support bf16.")] = True,
    set_: SetOption = None,
) -> None:
    """Print the DeepSpeed JSON a recipe resolves to."""
    from tg_train.engine import deepspeed_config

    try:
        r = load_recipe(recipe, set_ or [], check_files=False)
        bf16_on = r.precision.bf16 == "true" or (r.precision.bf16 == "auto" and bf16)
        typer.echo(json.dumps(deepspeed_config(r, world_size, bf16_on), indent=2))
    except (RecipeError, ValueError) as e:
        _fail(str(e))


@app.command()
def quickstart(
    set_: SetOption = None,
    scale: Annotated[
        float, typer.Option(help="Shrink data and steps by this factor (e.g. 0.05 for a smoke run).")
    ] = 1.0,
    threads: Annotated[int | None, typer.Option(help="CPU threads for evaluation.")] = None,
) -> None:
    """The main job: shapes world, stages 1 -> 2 -> 3 on the tiny preset, REC on held-out scenes."""
    from tg_train.quickstart import results_table, run_quickstart

    try:
        results = run_quickstart("quickstart", set_ or [], scale=scale, threads=threads)
    except USER_ERRORS as e:
        _fail(str(e))
        return
    if results:
        typer.echo(results_table(results))


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover - ``python -m tg_train.cli`` (e.g. ``deepspeed --module``)
    main()
