"""The ``tg-synth`` command: user errors are one clear line, runs and status report what was made."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from typer.testing import CliRunner

from tg_synth.cache import StepCache
from tg_synth.cli import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def test_run_needs_a_config_or_shapes() -> None:
    r = _invoke("run")
    assert r.exit_code == 1 and "give a CONFIG file or --shapes" in r.output and "Traceback" not in r.output


def test_a_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[qa]\nrecc = 2\n")
    r = _invoke("run", str(bad))
    assert r.exit_code == 1
    assert "unknown key(s) ['recc']" in r.output and "Traceback" not in r.output
    r = _invoke("run", "--shapes", "--set", "qa.rec")
    assert r.exit_code == 1 and "expected key=value" in r.output


def test_shapes_run_then_status(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = _invoke("run", "--shapes", "--out", str(out), "--no-progress", "--set", "input.shapes_scenes=6")
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    # the shapes world was generated inside the run, and image paths are relative to the run directory:
    # the parent of each stage directory, where a trainer looks by default
    assert (out / "shapes" / "manifest.json").is_file()
    assert manifest["image_root"] == str(out.resolve())
    from tg_data.io import read_samples

    for stage in ("stage2", "stage3"):
        for sample in read_samples(str(out / stage)):
            assert sample.image.startswith("shapes/images/") and (out / stage).parent.joinpath(sample.image).is_file()
    assert manifest["items"]["total"] == 6
    assert f"stage 2 {manifest['stage2']['samples']} samples" in " ".join(r.output.split())

    s = _invoke("status", str(out))
    assert s.exit_code == 0
    text = " ".join(s.output.split())
    for task, n in manifest["tasks"].items():
        assert task in text and str(n) in text
    for reason in manifest["filtered"]:
        assert reason in text
    j = _invoke("status", str(out), "--json")
    data = json.loads(j.output)
    assert data["complete"] is True and data["manifest"]["tasks"] == manifest["tasks"]
    assert sum(v["done"] for v in data["cache"].values()) > 0

    (out / "manifest.json").unlink()  # as if the run had been stopped before writing it
    partial = _invoke("status", str(out))
    assert partial.exit_code == 0 and "no manifest yet" in partial.output and "recognize" in partial.output


def test_status_of_a_missing_run_is_an_error(tmp_path: Path) -> None:
    r = _invoke("status", str(tmp_path / "nope"))
    assert r.exit_code == 1 and "no such run directory" in r.output
    r = _invoke("status", str(tmp_path))
    assert r.exit_code == 1 and "neither manifest.json nor cache.sqlite" in r.output


def test_two_runs_on_one_output_do_not_mix(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with StepCache(out / "cache.sqlite"):
        r = _invoke("run", "--shapes", "--out", str(out), "--no-progress", "--set", "input.shapes_scenes=2")
    assert r.exit_code == 1 and "another tg-synth run is using this cache" in r.output


def test_an_unreachable_endpoint_stops_with_a_message(tmp_path: Path, shapes_root: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _invoke("run", "--shapes", "--out", str(tmp_path / "run"), "--no-progress",
                "--set", f'input.shapes_root="{shapes_root}"', "--set", "input.limit=2",
                "--set", 'backends.mllm.kind="openai"', "--set", f'backends.mllm.base_url="http://127.0.0.1:{port}/v1"',
                "--set", 'backends.mllm.model="m"', "--set", "backends.mllm.max_attempts=2",
                "--set", "backends.mllm.backoff_base_s=0.01")
    assert r.exit_code == 1 and "cannot reach" in r.output and "finished records are kept" in r.output


def test_configs_lists_the_shipped_shapes_config() -> None:
    r = _invoke("configs")
    assert r.exit_code == 0 and r.output.startswith("shapes\t") and "configs/shapes.toml" in r.output
