"""The tg-data command through typer's CliRunner: the happy paths and every kind of bad input."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tg_data.cli import app
from tg_data.draw import PALETTE
from tg_data.io import read_samples
from tg_data.schema import Sample
from tg_data.shapes import read_manifest

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def _flat(text: str) -> str:
    return " ".join(text.split())


# shapes, validate, inspect ------------------------------------------------------------------------
def test_shapes_then_validate_then_inspect(tmp_path: Path) -> None:
    out = tmp_path / "s"
    result = run("shapes", "--out", out, "--scenes", 30, "--seed", 4, "--image-size", 128, "--no-progress")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(str(out))
    assert {k: v["scenes"] for k, v in manifest["splits"].items()} == {"train": 24, "val": 3, "test": 3}
    assert manifest["config"]["image_size"] == 128
    assert len(list((out / "images" / "train").glob("*.png"))) == 24
    assert "grounded_desc" in result.output

    result = run("validate", out)
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output

    result = run("inspect", out, "--draw", 2)
    assert result.exit_code == 0, result.output
    pictures = sorted((out / "inspect").glob("*.png"))
    assert len(pictures) == 2
    assert "rec" in result.output and "shapes" in result.output
    # the first object's box is drawn in the first palette colour where the box says it is
    name = pictures[0].name.split("-", 1)[1][: -len(".png")]
    sample = next(s for split in ("train", "val", "test") for s in read_samples(str(out / f"{split}.parquet")) if s.id == name)
    drawn = np.asarray(Image.open(pictures[0]).convert("RGB"))
    scale = 448 // 128 + (448 % 128 > 0)
    x1, _, x2, y2 = (round(v * scale) for v in sample.objects[0].box.to_pixels(sample.width, sample.height))
    edge = drawn[y2 - 2, x1 + 2 : x2 - 2]  # bottom edge of the rectangle
    assert (edge == PALETTE[0]).all(axis=1).mean() > 0.9


def test_shapes_replaces_an_earlier_dataset_but_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert run("shapes", "--out", out, "--scenes", 20, "--no-progress").exit_code == 0
    assert run("shapes", "--out", out, "--scenes", 10, "--no-progress").exit_code == 0
    assert len(list(out.glob("images/*/*.png"))) == 10  # no stale images of the larger run
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = run("shapes", "--out", other, "--scenes", 5)
    assert result.exit_code == 1 and "other files in it" in result.output
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scenes", "0"), "--scenes must be at least 1"),
        (("--val-frac", "0.6", "--test-frac", "0.5"), "sum to less than 1"),
        (("--min-shapes", "4", "--max-shapes", "2"), "min_shapes"),
        (("--image-size", "8"), "image_size"),
    ],
)
def test_shapes_bad_settings(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run("shapes", "--out", tmp_path / "s", *args)
    assert result.exit_code == 1 and message in _flat(result.output)


def test_validate_reports_problems_and_fails(shapes_copy: Path) -> None:
    (shapes_copy / "images" / "train" / "train-000002.png").unlink()
    result = run("validate", shapes_copy)
    assert result.exit_code == 1
    text = _flat(result.output)
    assert "image not found" in text and "train.parquet: sample 'train-000002-caption-0'" in text


def test_validate_and_inspect_name_a_missing_path(tmp_path: Path) -> None:
    for command in ("validate", "inspect"):
        result = run(command, tmp_path / "nothing")
        assert result.exit_code == 1 and "no such file or folder" in result.output


# bad input through convert and inspect -------------------------------------------------------------
def _bad_file(tmp_path: Path, factory: Callable[..., Sample], image_writer: Callable, case: str) -> Path:
    image_writer(tmp_path / "img.png", 64, 48)
    good = [factory(f"s{k}").to_dict() for k in range(3)]
    bad = factory("bad").to_dict()
    if case == "malformed JSON":
        line = '{"id": "bad", "turns": ['
    else:
        if case == "missing image":
            bad["image"] = "gone.png"
        elif case == "inverted box":
            bad["objects"][0]["box"] = [0.6, 0.2, 0.1, 0.6]
        elif case == "NaN box":
            bad["objects"][0]["box"] = [0.1, float("nan"), 0.5, 0.6]
        elif case == "unknown role":
            bad["turns"][1]["role"] = "robot"
        elif case == "image count":
            bad["turns"][0]["text"] = "no image token <object>"
        elif case == "object count":
            bad["turns"][0]["text"] += " <object>"
        line = json.dumps(bad)
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([json.dumps(good[0]), line, json.dumps(good[1]), json.dumps(good[2])]) + "\n")
    return path


BAD_CASES = {
    "malformed JSON": ("data.jsonl:2", "malformed JSON"),
    "missing image": ("sample 'bad'", "image gone.png not found"),
    "inverted box": ("data.jsonl:2", "inverted or empty"),
    "NaN box": ("data.jsonl:2", "finite"),
    "unknown role": ("data.jsonl:2", "unknown role 'robot'"),
    "image count": ("data.jsonl:2", "0 <image> placeholder(s) but an image"),
    "object count": ("data.jsonl:2", "2 <object> placeholder(s) but 1"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_convert_names_bad_input_or_skips_and_reports_it(
    case: str, tmp_path: Path, sample_factory: Callable[..., Sample], image_writer: Callable
) -> None:
    where, message = BAD_CASES[case]
    src = _bad_file(tmp_path, sample_factory, image_writer, case)
    out = tmp_path / "out.parquet"
    result = run("convert", src, out)
    assert result.exit_code == 1
    text = _flat(result.output)
    assert where in text and message in text and str(src) in text
    assert not out.exists()  # nothing half-written

    result = run("convert", src, out, "--skip-invalid")
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    assert "wrote 3 samples" in text and "1 record(s) skipped" in text and message in text and where in text
    assert [s.id for s in read_samples(str(out))] == ["s0", "s1", "s2"]


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_inspect_and_validate_on_bad_input(
    case: str, tmp_path: Path, sample_factory: Callable[..., Sample], image_writer: Callable
) -> None:
    where, message = BAD_CASES[case]
    src = _bad_file(tmp_path, sample_factory, image_writer, case)
    result = run("validate", src)
    reason = "image not found" if case == "missing image" else message  # validate groups by reason
    assert result.exit_code == 1 and reason in _flat(result.output) and where in _flat(result.output)
    if case != "missing image":  # inspect counts; it does not open images unless it draws
        result = run("inspect", src)
        assert result.exit_code == 1 and message in _flat(result.output) and where in _flat(result.output)
        result = run("inspect", src, "--skip-invalid")
        assert result.exit_code == 0 and "1 record(s) skipped" in _flat(result.output)


def test_convert_without_image_checks(tmp_path: Path, sample_factory: Callable[..., Sample], image_writer: Callable) -> None:
    src = _bad_file(tmp_path, sample_factory, image_writer, "missing image")
    result = run("convert", src, tmp_path / "out.jsonl", "--no-check-images")
    assert result.exit_code == 0 and "wrote 4 samples" in result.output


# conversions --------------------------------------------------------------------------------------
def test_llava_round_trip_through_the_cli(upstream: Callable, tmp_path: Path) -> None:
    up = upstream("llava")
    mid, back = tmp_path / "mid.parquet", tmp_path / "back.json"
    assert run("convert", up.path, mid, "--no-check-images").exit_code == 0
    result = run("convert", mid, back, "--no-check-images")
    assert result.exit_code == 0 and "tg -> llava" in result.output
    assert json.loads(back.read_text()) == up.truth["records"]


def test_refcoco_with_options(upstream: Callable, tmp_path: Path, image_writer: Callable) -> None:
    up = upstream("refcoco")
    images = tmp_path / "train2014"
    image_writer(images / "COCO_train2014_000000581857.jpg", 640, 480)
    image_writer(images / "COCO_train2014_000000002964.jpg", 427, 640)
    out = tmp_path / "refcoco_testA.jsonl"
    result = run("convert", up.path, out, "--split", "testA", "--split", "testB", "--image-root", images)
    assert result.exit_code == 0, result.output
    samples = list(read_samples(str(out)))
    assert sorted(s.meta["split"] for s in samples) == ["testA", "testA", "testB"]
    result = run("convert", up.path, out, "--boxes", "keep")
    assert result.exit_code == 1
    assert "does not take --boxes" in _flat(result.output) and "--split-by" in _flat(result.output)


def test_pope_fixture_to_jsonl(shared_fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "pope.jsonl"
    result = run("convert", shared_fixtures / "pope" / "coco_pope_adversarial.json", out, "--no-check-images")
    assert result.exit_code == 0 and "wrote 3000 samples (pope -> jsonl)" in _flat(result.output)
    assert {s.meta["category"] for s in read_samples(str(out))} == {"adversarial"}


def test_flickr_to_shards(upstream: Callable, tmp_path: Path) -> None:
    up = upstream("flickr30k")
    out = tmp_path / "shards"
    result = run("convert", up.path, out, "--boxes", "keep", "--task", "rec", "--shard-rows", "2", "--no-check-images")
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.parquet"))) == 2 and len(list(read_samples(str(out)))) == 3


def test_a_malicious_pickle_is_one_clear_error(upstream: Callable, tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    up = upstream("refcoco")
    (up.path / "refs(unc).p").write_bytes(pickle.dumps(Payload(), protocol=2))
    result = run("convert", up.path, tmp_path / "x.parquet")
    assert result.exit_code == 1 and "refusing to load this pickle" in _flat(result.output)
    assert not (tmp_path / "pwned").exists()


def test_convert_input_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.jsonl").write_text('{"hello": 1}\n')
    result = run("convert", tmp_path / "notes.jsonl", tmp_path / "o.parquet")
    assert result.exit_code == 1 and "--from" not in result.output and "pass the format" in _flat(result.output)
    result = run("convert", tmp_path / "notes.jsonl", tmp_path / "o.parquet", "--from", "coco", "--split", "val")
    assert result.exit_code == 1 and "unknown format 'coco'" in result.output
    result = run("convert", tmp_path / "notes.jsonl", tmp_path / "o.txt", "--from", "tg", "--to", "csv")
    assert result.exit_code == 1 and "--to must be one of" in result.output


def test_inspect_draws_beside_a_sample_file(tmp_path: Path, sample_factory: Callable[..., Sample], image_writer: Callable) -> None:
    image_writer(tmp_path / "img.png", 64, 48)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(sample_factory(f"s{k}").to_dict()) for k in range(3)))
    result = run("inspect", tmp_path / "d.jsonl", "--draw", 5)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "d-inspect").glob("*.png"))) == 1  # one sample per image


def test_shapes_split_to_llava_with_a_relative_image_root(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(shapes_dir, tmp_path / "data" / "shapes")
    monkeypatch.chdir(tmp_path)
    result = run("convert", "data/shapes/val.parquet", "out/val_llava.json", "--image-root", "data/shapes")
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "out" / "val_llava.json").read_text())
    assert all(r["image"].startswith("data/shapes/images/val/") for r in records)
    assert all((tmp_path / r["image"]).is_file() for r in records)
    result = run("convert", "data/shapes/val.parquet", "out/x.json", "--image-root", "elsewhere")
    assert result.exit_code == 1 and "elsewhere/images/val/" in _flat(result.output)


def test_messages_with_markup_like_text_print_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"id": "[bold]x", "conversations": [{"from": "[/bold]", "value": "hi"}]}]))
    result = run("convert", path, tmp_path / "o.parquet")
    assert result.exit_code == 1 and "unknown role '[/bold]'" in result.output
    result = run("convert", path, tmp_path / "o.parquet", "--skip-invalid")
    assert result.exit_code == 0 and "1 record(s) skipped" in _flat(result.output)
    assert "unknown role '[...]' in conversation turn 0" in _flat(result.output)  # values grouped away
