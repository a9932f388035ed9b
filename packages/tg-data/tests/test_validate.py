from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from tg_data.box import Box
from tg_data.io import read_samples
from tg_data.schema import ObjectRef, Sample, Show, Turn
from tg_data.shapes import read_manifest
from tg_data.validate import validate_dataset


def test_a_fresh_shapes_dataset_is_valid(shapes_dir: Path) -> None:
    report = validate_dataset(str(shapes_dir))
    manifest = read_manifest(str(shapes_dir))
    assert report.ok, report.problems.summary()
    assert report.samples == sum(info["samples"] for info in manifest["splits"].values())
    assert report.images == sum(info["scenes"] for info in manifest["splits"].values())
    assert {k: dict(v) for k, v in report.per_file.items()} == {k: v["tasks"] for k, v in manifest["splits"].items()}


def test_a_missing_image_is_counted_for_every_sample_that_uses_it(shapes_copy: Path) -> None:
    (shapes_copy / "images" / "val" / "val-000003.png").unlink()
    users = [s.id for s in read_samples(str(shapes_copy / "val.parquet")) if s.image == "images/val/val-000003.png"]
    report = validate_dataset(str(shapes_copy))
    assert not report.ok
    assert report.problems.reasons == {"image not found": len(users)}
    assert report.problems.examples["image not found"][0] == f"{shapes_copy}/val.parquet: sample {users[0]!r}"


def test_an_image_of_another_size_is_caught(shapes_copy: Path) -> None:
    path = shapes_copy / "images" / "test" / "test-000001.png"
    w, h = Image.open(path).size
    Image.new("RGB", (w + 10, h)).save(path)
    report = validate_dataset(str(shapes_copy))
    (reason,) = report.problems.reasons
    assert reason == f"image is {w + 10}x{h} but the sample says {w}x{h}"


def test_manifest_counts_must_match(shapes_copy: Path) -> None:
    manifest = json.loads((shapes_copy / "manifest.json").read_text())
    manifest["splits"]["train"]["tasks"]["rec"] += 1
    (shapes_copy / "manifest.json").write_text(json.dumps(manifest))
    report = validate_dataset(str(shapes_copy))
    assert report.problems.reasons == {"manifest counts differ from the samples": 1}


def test_every_problem_of_a_sample_file_is_counted(
    tmp_path: Path, sample_factory: Callable[..., Sample], image_writer: Callable
) -> None:
    image_writer(tmp_path / "img.png", 64, 48)
    good = sample_factory("good")
    padded = sample_factory("padded", objects=[ObjectRef(Box(0.1, 0.0, 0.5, 0.05), Show.COORD.value), good.objects[1]],
                            turns=[Turn("user", "<image>\n<object>"), Turn("assistant", "[0.100,0.000,0.500,0.050]")])
    silent = sample_factory("silent", turns=[Turn("user", "<image>\n<object>"), Turn("assistant", "somewhere")])
    missing = sample_factory("missing", image="nowhere.png")
    inverted = good.to_dict() | {"id": "inverted"}
    inverted["objects"] = [dict(inverted["objects"][0], box=[0.5, 0.2, 0.1, 0.6]), inverted["objects"][1]]
    role = good.to_dict() | {"id": "role"}
    role["turns"] = [dict(role["turns"][0], role="robot"), role["turns"][1]]
    lines = [json.dumps(good.to_dict()), json.dumps(padded.to_dict()), json.dumps(silent.to_dict()),
             json.dumps(missing.to_dict()), json.dumps(inverted), json.dumps(role), '{"id": "cut", "tu']
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = validate_dataset(str(path))
    assert report.samples == 4  # good, padded, silent, missing parse; three records do not
    reasons = report.problems.reasons
    assert report.problems.total == 6
    assert reasons["object 0: box reaches outside the 64x48 image, into the padding"] == 1
    assert reasons["object 0: shown as coordinates, but its coordinate text is in no turn"] == 1
    assert reasons["image not found"] == 1
    assert any("inverted" in r for r in reasons) and any("unknown role 'robot'" in r for r in reasons)
    assert any("malformed JSON" in r for r in reasons)
    assert report.problems.examples["image not found"] == [f"{path}: sample 'missing'"]
    assert any(ex == [f"{path}:7"] for r, ex in report.problems.examples.items() if "malformed" in r)
    without_images = validate_dataset(str(path), check_images=False)
    assert without_images.problems.total == 5 and "image not found" not in without_images.problems.reasons
