"""The ``tg-data`` command: make the shapes world, convert datasets, look inside them, check them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import fsspec
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tg_data.box import BoxError
from tg_data.draw import draw_sample
from tg_data.io import DataError, SkipReport, handle_bad_record, write_samples
from tg_data.readers import READERS, OptionError, detect_format, read, write_llava_json
from tg_data.schema import Sample, SampleError
from tg_data.shapes import SPLITS, ShapesConfig, write_shapes_dataset
from tg_data.shapes.dataset import FORMAT as SHAPES_FORMAT
from tg_data.validate import is_shapes_dataset, iter_sample_files, sample_files, validate_dataset

app = typer.Typer(
    help="tg-data: the shapes world, dataset conversion, inspection and validation for TinyGroundingGPT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
out_console = Console()
err_console = Console(stderr=True)

OUTPUT_FORMATS = ("parquet", "jsonl", "llava")


@contextmanager
def _user_errors() -> Iterator[None]:
    """A user's mistake becomes one clear line and exit status 1, not a traceback."""
    try:
        yield
    except (DataError, SampleError, BoxError, FileNotFoundError) as e:
        err_console.print(Text.assemble(("error: ", "bold red"), str(e)), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _report_skips(skip: SkipReport | None) -> None:
    if skip is not None and skip.total:
        err_console.print(skip.summary(), markup=False, highlight=False, soft_wrap=True)


# shapes -------------------------------------------------------------------------------------------
def _split_sizes(scenes: int, val_frac: float, test_frac: float) -> dict[str, int]:
    if scenes < 1:
        raise DataError(f"--scenes must be at least 1, got {scenes}")
    if val_frac < 0 or test_frac < 0 or val_frac + test_frac >= 1:
        raise DataError(f"--val-frac and --test-frac must be >= 0 and sum to less than 1, got {val_frac} and {test_frac}")
    n_val, n_test = round(scenes * val_frac), round(scenes * test_frac)
    return {"train": scenes - n_val - n_test, "val": n_val, "test": n_test}


def _prepare_out(out: str) -> None:
    """A new or empty folder, or an earlier shapes dataset (replaced); anything else is refused."""
    fs, p = fsspec.core.url_to_fs(out)
    if not fs.exists(p):
        return
    if not fs.isdir(p):
        raise DataError(f"--out {out} is a file; give a folder")
    if not fs.ls(p, detail=False):
        return
    if not is_shapes_dataset(out):
        raise DataError(f"--out {out} is a folder with other files in it; give a new or empty folder")
    root = p.rstrip("/")
    for name in ("images", "scenes", "manifest.json", *(f"{s}.parquet" for s in SPLITS)):
        if fs.exists(f"{root}/{name}"):
            fs.rm(f"{root}/{name}", recursive=True)
    err_console.print(f"replacing the shapes dataset in {out}", markup=False)


@app.command()
def shapes(
    out: Annotated[str, typer.Option("--out", help="Folder to write the dataset to (new, empty, or an earlier shapes dataset).")],
    scenes: Annotated[int, typer.Option(help="Number of scenes in all splits together.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes the same dataset.")] = 0,
    image_size: Annotated[int, typer.Option(help="Longer image side in pixels.")] = 224,
    val_frac: Annotated[float, typer.Option(help="Fraction of scenes in the val split.")] = 0.1,
    test_frac: Annotated[float, typer.Option(help="Fraction of scenes in the test split.")] = 0.1,
    min_shapes: Annotated[int, typer.Option(help="Fewest shapes in a scene.")] = 1,
    max_shapes: Annotated[int, typer.Option(help="Most shapes in a scene.")] = 5,
    textured: Annotated[float, typer.Option(help="Probability of a textured background.")] = 0.5,
    pope: Annotated[bool, typer.Option(help="Add POPE questions to val and test.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Write a shapes-world dataset: images, samples of every task per split, scene truth, manifest.

    The dataset is PNG images, one Parquet file of samples per split, each scene's truth as JSON Lines,
    and manifest.json with counts per split and task. The same seed writes the same dataset.
    """
    with _user_errors():
        sizes = _split_sizes(scenes, val_frac, test_frac)
        try:
            config = ShapesConfig(image_size=image_size, min_shapes=min_shapes, max_shapes=max_shapes, textured=textured)
        except ValueError as e:
            raise DataError(f"shapes settings: {e}") from None
        _prepare_out(out)
        manifest = write_shapes_dataset(
            out, sizes, seed=seed, config=config, pope_splits=("val", "test") if pope else (), progress=progress
        )
    table = Table(title=f"{out}: {SHAPES_FORMAT}, seed {seed}")
    splits = list(manifest["splits"])
    table.add_column("task")
    for s in splits:
        table.add_column(s, justify="right")
    tasks = sorted({t for info in manifest["splits"].values() for t in info["tasks"]})
    for t in tasks:
        table.add_row(t, *(str(manifest["splits"][s]["tasks"].get(t, 0)) for s in splits))
    table.add_row("[bold]samples", *(str(manifest["splits"][s]["samples"]) for s in splits))
    table.add_row("[bold]scenes", *(str(manifest["splits"][s]["scenes"]) for s in splits))
    out_console.print(table)


# convert ------------------------------------------------------------------------------------------
def _output_format(out: str, to: str | None) -> str:
    if to is not None:
        if to not in OUTPUT_FORMATS:
            raise DataError(f"--to must be one of {', '.join(OUTPUT_FORMATS)}, got {to!r}")
        return to
    if out.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if out.endswith(".json"):
        return "llava"
    return "parquet"


def _reader_options(fmt: str, given: dict[str, Any], split: list[str]) -> dict[str, Any]:
    options = {k: v for k, v in given.items() if v is not None}
    if split:
        takes = READERS[fmt].options
        if "splits" in takes:
            options["splits"] = split
        elif "split" in takes and len(split) == 1:
            options["split"] = split[0]
        elif "split" in takes:
            raise DataError(f"format {fmt!r} reads one split at a time; got --split {' --split '.join(split)}")
        else:
            options["split"] = split  # refused by name below
    return options


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _checked_images(
    samples: Iterable[Sample], base: str | None, where: str, skip: SkipReport | None
) -> Iterator[Sample]:
    """Samples whose image exists (relative paths start from ``base``, else the working folder); a
    missing one is an error naming the sample, or a counted skip."""
    seen: dict[str, bool] = {}
    for s in samples:
        if s.image:
            relative = not ("://" in s.image or s.image.startswith("/"))
            uri = f"{base.rstrip('/')}/{s.image}" if relative and base else s.image
            if uri not in seen:
                fs, p = fsspec.core.url_to_fs(uri)
                seen[uri] = fs.exists(p)
            if not seen[uri]:
                handle_bad_record(
                    ValueError(
                        f"image {s.image} not found (looked for {uri}; pass --image-root where the images "
                        "are, or --no-check-images)"
                    ),
                    f"{where}: sample {s.id!r}",
                    skip,
                )
                continue
        yield s


@app.command()
def convert(
    source: Annotated[str, typer.Argument(help="Upstream file or folder (path or fsspec URI).")],
    out: Annotated[str, typer.Argument(help="Output: .parquet, .jsonl, .json (LLaVA) or a folder of Parquet shards.")],
    from_: Annotated[str | None, typer.Option("--from", help=f"Input format: {', '.join(READERS)} (default: detected).")] = None,
    to: Annotated[str | None, typer.Option(help="Output format: parquet, jsonl or llava (default: from OUT's suffix).")] = None,
    image_root: Annotated[str | None, typer.Option(help="Folder the record's image paths are relative to.")] = None,
    instances: Annotated[str | None, typer.Option(help="refcoco: COCO instances.json (default: beside the refs file).")] = None,
    split_by: Annotated[str | None, typer.Option(help="refcoco: unc, umd or google.")] = None,
    split: Annotated[list[str] | None, typer.Option(help="refcoco: splits to keep (repeat); flickr30k: the split file.")] = None,
    image_data: Annotated[str | None, typer.Option(help="vg: image_data.json with image sizes and paths.")] = None,
    sizes: Annotated[str | None, typer.Option(help="caps-boxes: image sizes (COCO annotations, or JSON mapping each image to width and height).")] = None,
    task: Annotated[str | None, typer.Option(help="refcoco/vg: rec or reg; flickr30k: grounded_desc or rec.")] = None,
    boxes: Annotated[str | None, typer.Option(help="flickr30k: merge a phrase's boxes or keep them all.")] = None,
    category: Annotated[str | None, typer.Option(help="pope: random, popular or adversarial (default: from the file name).")] = None,
    shard_rows: Annotated[int | None, typer.Option(help="Parquet: rows per shard when OUT is a folder.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Count and skip bad records instead of stopping at the first.")] = False,
    check_images: Annotated[bool, typer.Option(help="Check that every record's image exists.")] = True,
) -> None:
    """Convert any supported dataset to tg-data Parquet or JSON Lines, or tg-data to LLaVA JSON."""
    with _user_errors():
        fmt = from_ or detect_format(source)
        if fmt not in READERS:
            raise DataError(f"unknown format {fmt!r} for --from; known: {', '.join(READERS)}")
        given = {
            "image_root": image_root, "instances": instances, "split_by": split_by, "image_data": image_data,
            "sizes": sizes, "task": task, "boxes": boxes, "category": category,
        }
        options = _reader_options(fmt, given, split or [])
        skip = SkipReport() if skip_invalid else None
        try:
            samples: Iterable[Sample] = read(fmt, source, skip=skip, **options)
        except OptionError as e:
            raise OptionError(e.fmt, e.unknown, e.takes, flag=_flag) from None
        if check_images:
            # the readers join --image-root to the paths already; without it, paths start at the input
            base = None if image_root else _input_folder(source)
            samples = _checked_images(samples, base, source, skip)
        kind = _output_format(out, to)
        if kind == "llava":
            n = write_llava_json(samples, out, skip=skip)
        elif kind == "jsonl":
            n = write_samples(samples, out)
        else:
            n = write_samples(samples, out, shard_rows=shard_rows)
    out_console.print(f"wrote {n} samples ({fmt} -> {kind}) to {out}", markup=False, highlight=False)
    _report_skips(skip)


def _input_folder(source: str) -> str:
    fs, p = fsspec.core.url_to_fs(source)
    if fs.isdir(p):
        return source.rstrip("/")
    return source.rsplit("/", 1)[0] if "/" in source else "."


# inspect ------------------------------------------------------------------------------------------
def _counts_table(title: str, per_file: dict[str, Counter[str]]) -> Table:
    table = Table(title=title)
    table.add_column(title.split()[0])
    labels = list(per_file)
    for label in labels:
        table.add_column(Text(label), justify="right")
    if len(labels) > 1:
        table.add_column("total", justify="right")
    keys = sorted({k for c in per_file.values() for k in c})
    for key in keys:
        row = [str(per_file[lb].get(key, 0)) for lb in labels]
        if len(labels) > 1:
            row.append(str(sum(per_file[lb].get(key, 0) for lb in labels)))
        table.add_row(Text(key or "(none)"), *row)
    totals = [str(sum(per_file[lb].values())) for lb in labels]
    if len(labels) > 1:
        totals.append(str(sum(sum(c.values()) for c in per_file.values())))
    table.add_row("[bold]all", *totals)
    return table


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)[:80]


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(help="A shapes dataset folder, a sample file, or a folder of shards.")],
    draw: Annotated[int, typer.Option(help="Write this many PNGs with boxes and labels drawn.")] = 0,
    draw_dir: Annotated[str | None, typer.Option(help="Where the drawings go (default: PATH/inspect or beside PATH).")] = None,
    image_root: Annotated[str | None, typer.Option(help="Folder the image paths are relative to.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Count and skip bad records instead of stopping at the first.")] = False,
) -> None:
    """Counts per task and source; --draw N writes N pictures with boxes and labels drawn."""
    with _user_errors():
        files = sample_files(path, image_root)
        skip = SkipReport() if skip_invalid else None
        tasks: dict[str, Counter[str]] = {f.label: Counter() for f in files}
        sources: dict[str, Counter[str]] = {f.label: Counter() for f in files}
        picked: dict[str, list[tuple[str, Sample]]] = {}
        drawn_images: set[str] = set()  # one sample per image, so the drawings show several scenes
        for sf, s in iter_sample_files(files, skip):
            tasks[sf.label][s.task] += 1
            sources[sf.label][s.source] += 1
            wanted = draw and s.image and s.objects and s.image not in drawn_images
            if wanted and len(picked.setdefault(s.task, [])) < draw:
                picked[s.task].append((sf.image_root, s))
                drawn_images.add(s.image)  # type: ignore[arg-type]
        out_console.print(_counts_table("task counts", tasks))
        out_console.print(_counts_table("source counts", sources))
        if draw:
            chosen = _round_robin(picked, draw)
            if not chosen:
                raise DataError(f"{path}: no sample with an image and objects to draw")
            target = draw_dir or _default_draw_dir(path)
            fs, root = fsspec.core.url_to_fs(target)
            fs.makedirs(root, exist_ok=True)
            for i, (base, s) in enumerate(chosen):
                name = f"{root.rstrip('/')}/{i:03d}-{_safe_name(s.id)}.png"
                with fs.open(name, "wb") as f:
                    draw_sample(s, base).save(f, format="PNG")
            out_console.print(f"drew {len(chosen)} samples in {target}", markup=False)
    _report_skips(skip)


def _round_robin(picked: dict[str, list[tuple[str, Sample]]], n: int) -> list[tuple[str, Sample]]:
    """Up to ``n`` samples, one task after another, so the drawings show several tasks."""
    out: list[tuple[str, Sample]] = []
    queues = [list(v) for _, v in sorted(picked.items())]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _default_draw_dir(path: str) -> str:
    fs, p = fsspec.core.url_to_fs(path)
    if fs.isdir(p):
        return f"{path.rstrip('/')}/inspect"
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    return f"{stem}-inspect"


# validate -----------------------------------------------------------------------------------------
@app.command()
def validate(
    path: Annotated[str, typer.Argument(help="A shapes dataset folder, a sample file, or a folder of shards.")],
    image_root: Annotated[str | None, typer.Option(help="Folder the image paths are relative to.")] = None,
    check_images: Annotated[bool, typer.Option(help="Check that images exist and have the stated sizes.")] = True,
) -> None:
    """Check every record and report every problem; exit 1 when anything is wrong.

    Checks: the record parses; its image exists with the stated size; boxes lie on the image, not in
    the padding; the `<image>`/`<object>` placeholders match the objects; coordinate-shown objects appear
    as coordinate text; a shapes dataset's manifest counts match its samples.
    """
    with _user_errors():
        report = validate_dataset(path, image_root=image_root, check_images=check_images)
    out_console.print(_counts_table("task counts", report.per_file))
    sources_table = Table(title="source counts")
    sources_table.add_column("source")
    sources_table.add_column("samples", justify="right")
    for src, n in sorted(report.sources.items()):
        sources_table.add_row(Text(src or "(none)"), str(n))
    out_console.print(sources_table)
    out_console.print(f"{report.samples} valid samples, {report.images} images checked")
    if not report.ok:
        err_console.print(Text.assemble((f"{report.problems.total} problem(s)", "bold red"), f" in {path}:"))
        err_console.print(report.problems.summary().split("\n", 1)[1], markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out_console.print("[bold green]no problems found[/]")


if __name__ == "__main__":
    app()
