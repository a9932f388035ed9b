"""``tg-encoders``: list the known towers, describe one, and embed images to a safetensors file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tg_encoders.errors import EncoderError

app = typer.Typer(
    name="tg-encoders",
    help="Vision towers (CLIP, DINOv2) and the multi-scale encoder of TinyGroundingGPT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def _describe(name: str) -> dict[str, Any]:
    """Dims and parameter count of a known tower or encoder, built on the meta device (no weights)."""
    import torch

    from tg_encoders.encoder import ENCODERS, build_encoder, encoder_specs
    from tg_encoders.towers import TOWERS, build_tower, count_parameters, tower_spec

    if name in TOWERS:
        with torch.device("meta"):
            tower = build_tower(tower_spec(name), load_weights=False)
        info = {"kind": "tower", **tower.describe(), "parameters": count_parameters(tower), "spec": tower.spec()}
        return info
    if name in ENCODERS:
        with torch.device("meta"):
            encoder = build_encoder(encoder_specs(name), load_weights=False)
        return {
            "kind": "encoder",
            "name": name,
            "image_size": encoder.image_size,
            "grid": encoder.grid,
            "num_patches": encoder.num_patches,
            "hidden_size": encoder.hidden_size,
            "parameters": count_parameters(encoder),
            "towers": [
                {**t.describe(), "parameters": count_parameters(t), "spec": t.spec()} for t in encoder.towers
            ],
        }
    raise EncoderError(
        f"unknown name {name!r}; towers: {', '.join(TOWERS)}; encoders: {', '.join(ENCODERS)}"
    )


def _norm(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


@app.command()
def towers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """List the known towers and encoders with their dims (nothing is downloaded)."""
    from tg_encoders.encoder import ENCODERS
    from tg_encoders.towers import TOWERS

    try:
        rows = [_describe(name) for name in [*TOWERS, *ENCODERS]]
    except EncoderError as e:
        raise _fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="tg-encoders: known towers and encoders")
    for column in ("name", "kind", "source", "image", "grid", "hidden", "params"):
        table.add_column(column)
    for row in rows:
        if row["kind"] == "tower":
            spec = row["spec"]
            source = spec.get("model") or f"{spec['type']} arch"
        else:
            source = " + ".join(t["name"] for t in row["towers"])
        table.add_row(
            row["name"], row["kind"], source, str(row["image_size"]), f"{row['grid']}x{row['grid']}",
            str(row["hidden_size"]), f"{row['parameters'] / 1e6:.2f}M",
        )
    console.print(table)


@app.command()
def info(
    name: Annotated[str, typer.Argument(help="A tower or encoder name (see `tg-encoders towers`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Dims, grid, parameter count and normalisation of a tower or encoder."""
    try:
        data = _describe(name)
    except EncoderError as e:
        raise _fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    towers_info = [data] if data["kind"] == "tower" else data["towers"]
    console.print(
        f"[bold]{data['name']}[/] ({data['kind']}): input {data['image_size']}x{data['image_size']}, "
        f"grid {data['grid']}x{data['grid']} = {data['num_patches']} patches, "
        f"hidden {data['hidden_size']}, {data['parameters']:,} parameters",
        soft_wrap=True,
    )
    for t in towers_info:
        console.print(
            f"  {t['name']}: {t['spec']['type']} {t['spec'].get('model') or 'arch'}, patch {t['patch_size']}, "
            f"hidden {t['hidden_size']}, {t['parameters']:,} params, layer {t['spec']['layer']}, "
            f"mean {_norm(t['mean'])}, std {_norm(t['std'])}, pretrained {t['spec']['pretrained']!r}",
            soft_wrap=True,
        )


def _open_images(paths: list[Path]) -> list[Any]:
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except FileNotFoundError:
            raise EncoderError(f"image {path} does not exist") from None
        except (UnidentifiedImageError, OSError) as e:
            raise EncoderError(f"image {path} cannot be decoded ({e})") from None
    return images


@app.command()
def embed(
    images: Annotated[list[Path], typer.Argument(help="Image files to encode.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors file.")],
    tower: Annotated[str | None, typer.Option(help="Encode with one tower (a name from `towers`).")] = None,
    encoder: Annotated[str | None, typer.Option(help="Encode with an encoder (a name from `towers`).")] = None,
    weights: Annotated[
        str | None, typer.Option(help="With --tower: a local checkpoint (open_clip or timm format).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward.")] = 16,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed for towers without pretrained weights (tiny).")] = 0,
) -> None:
    """Encode images into patch features, saved with their shapes and padding geometry."""
    import torch

    from tg_encoders.encoder import MultiScaleEncoder, build_encoder, encoder_specs
    from tg_encoders.features import write_features
    from tg_encoders.processing import ImageProcessor
    from tg_encoders.towers import build_tower, tower_spec

    if (tower is None) == (encoder is None):
        raise _fail("give exactly one of --tower NAME or --encoder NAME (see `tg-encoders towers`)")
    if weights is not None and tower is None:
        raise _fail("--weights goes with --tower (an encoder loads each tower's own weights)")
    try:
        torch_device = torch.device(device)
    except RuntimeError as e:
        raise _fail(f"bad --device {device!r}: {e}") from None
    try:
        pictures = _open_images(images)
        torch.manual_seed(seed)
        if tower is not None:
            spec = tower_spec(tower)
            if weights is not None:
                spec["pretrained"] = weights
            model = MultiScaleEncoder([build_tower(spec)])
        else:
            model = build_encoder(encoder_specs(encoder))  # type: ignore[arg-type]
        try:
            model = model.to(torch_device)
        except (RuntimeError, AssertionError) as e:
            raise EncoderError(f"cannot use --device {device!r}: {e}") from None
        processor = ImageProcessor(model.image_size)
        batches, geometry = [], []
        with torch.inference_mode():
            for start in range(0, len(pictures), batch_size):
                processed = processor(pictures[start : start + batch_size])
                batches.append(model(processed.pixel_values.to(torch_device)).float().cpu())
                geometry.extend(processed.geometry)
        features = torch.cat(batches)
        write_features(
            out, features, geometry, [str(p) for p in images], model.specs(), model.grid,
            model.image_size, model.widths,
        )
    except EncoderError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"cannot write {out}: {e}") from None
    console.print(
        f"wrote {out}: features {tuple(features.shape)} "
        f"({len(images)} images x {model.num_patches} patches x {model.hidden_size} channels)",
        soft_wrap=True,
    )


if __name__ == "__main__":
    app()
