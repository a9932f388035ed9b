"""The ``tg-encoders`` command line, run in-process on tiny towers."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from tg_data.box import PadGeometry
from tg_encoders import (
    ImageProcessor,
    MultiScaleEncoder,
    build_encoder,
    build_tower,
    count_parameters,
    read_features,
    tiny_encoder_specs,
    tower_spec,
)
from tg_encoders.cli import app

runner = CliRunner()


def _images(tmp_path: Path) -> list[Path]:
    paths = []
    for i, size in enumerate([(80, 50), (33, 61), (64, 64)]):
        image = Image.new("RGB", size, (30 * i, 100, 200 - 40 * i))
        ImageDraw.Draw(image).ellipse([5, 5, 25, 30], fill=(250, 250, 0))
        path = tmp_path / f"img{i}.png"
        image.save(path)
        paths.append(path)
    return paths


def test_towers_lists_every_known_name_with_its_dims():
    result = runner.invoke(app, ["towers", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert {"clip-vit-l-14-336", "dinov2-vit-l-14-336", "tiny-clip", "tiny-dinov2", "tiny",
            "clip-dinov2-l14-336"} <= set(rows)
    assert (rows["clip-dinov2-l14-336"]["grid"], rows["clip-dinov2-l14-336"]["hidden_size"]) == (24, 2048)
    assert rows["tiny"]["hidden_size"] == build_encoder(tiny_encoder_specs()).hidden_size
    table = runner.invoke(app, ["towers"])
    assert table.exit_code == 0 and "tiny-dinov2" in table.output and "24x24" in table.output


def test_info_reports_dims_params_and_normalisation():
    result = runner.invoke(app, ["info", "tiny-clip", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    tower = build_tower(tower_spec("tiny-clip"))
    assert data["parameters"] == count_parameters(tower)
    assert (data["grid"], data["hidden_size"], data["image_size"]) == (tower.grid, tower.hidden_size, tower.image_size)
    assert data["mean"] == list(tower.mean) and data["std"] == list(tower.std)
    text = runner.invoke(app, ["info", "clip-dinov2-l14-336"])
    assert text.exit_code == 0
    assert "grid 24x24" in text.output and "hidden 2048" in text.output and "0.4815" in text.output


def test_info_unknown_name_is_one_clear_error():
    result = runner.invoke(app, ["info", "clip-huge"])
    assert result.exit_code == 1
    assert "unknown name 'clip-huge'" in result.output and "tiny-clip" in result.output
    assert "Traceback" not in result.output


def test_embed_writes_features_with_shapes_and_geometry(tmp_path):
    paths = _images(tmp_path)
    out = tmp_path / "features.safetensors"
    result = runner.invoke(app, ["embed", *map(str, paths), "--encoder", "tiny", "--out", str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    with safe_open(str(out), framework="pt") as f:
        metadata = f.metadata()
        features = f.get_tensor("features")
        sizes = f.get_tensor("image_sizes")
    assert features.shape == (3, 64, 128)
    assert sizes.tolist() == [[80, 50], [33, 61], [64, 64]]
    geometry = json.loads(metadata["geometry"])
    assert geometry[0] == {"width": 80, "height": 50, "side": 80, "offset_x": 0.0, "offset_y": 15.0}
    assert json.loads(metadata["images"]) == [str(p) for p in paths]
    assert int(metadata["grid"]) == 8 and json.loads(metadata["widths"]) == [64, 64]

    # The same features as encoding in-process with the same seed.
    torch.manual_seed(0)
    encoder = build_encoder(tiny_encoder_specs())
    processed = ImageProcessor(64)([Image.open(p) for p in paths])
    with torch.no_grad():
        expected = encoder(processed.pixel_values)
    torch.testing.assert_close(features, expected)

    loaded = read_features(out)
    assert loaded.geometry == [PadGeometry(80, 50), PadGeometry(33, 61), PadGeometry(64, 64)]
    assert loaded.specs == encoder.specs() and loaded.hidden_size == 128


def test_embed_with_one_tower_and_local_weights(tmp_path):
    paths = _images(tmp_path)[:2]
    spec = tower_spec("tiny-dinov2")
    torch.manual_seed(3)
    library = timm.create_model(
        "vit_small_patch14_dinov2", pretrained=False, embed_dim=64, depth=2, num_heads=2, patch_size=8,
        img_size=64, num_classes=0,
    )
    weights = tmp_path / "model.safetensors"
    save_file(library.state_dict(), str(weights))
    out = tmp_path / "dino.safetensors"
    result = runner.invoke(
        app, ["embed", *map(str, paths), "--tower", "tiny-dinov2", "--weights", str(weights), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    loaded = read_features(out)
    tower = build_tower({**spec, "pretrained": str(weights)})
    with torch.no_grad():
        expected = MultiScaleEncoder([tower])(ImageProcessor(64)([Image.open(p) for p in paths]).pixel_values)
    torch.testing.assert_close(loaded.features, expected)
    assert loaded.specs[0]["pretrained"] == str(weights)


def test_embed_user_errors_are_one_line_and_non_zero(tmp_path):
    paths = _images(tmp_path)
    out = str(tmp_path / "x.safetensors")
    cases = [
        (["embed", str(paths[0]), "--out", out], "exactly one of --tower"),
        (["embed", str(paths[0]), "--tower", "tiny-clip", "--encoder", "tiny", "--out", out], "exactly one of"),
        (["embed", str(tmp_path / "missing.png"), "--encoder", "tiny", "--out", out], "does not exist"),
        (["embed", str(paths[0]), "--tower", "nope", "--out", out], "unknown tower 'nope'"),
        (["embed", str(paths[0]), "--encoder", "tiny", "--weights", "w.pt", "--out", out], "--weights goes with"),
    ]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    cases.append((["embed", str(broken), "--encoder", "tiny", "--out", out], "cannot be decoded"))
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not Path(out).exists()
