from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from tg_data.box import Box
from tg_data.prompts import REC_PROMPT
from tg_data.schema import ObjectRef, Role, Show, Turn
from tg_infer.cli import app
from tg_infer.predictor import DESCRIBE_PROMPT, Predictor
from tg_infer.requests import Request

runner = CliRunner()


def run(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def test_ground_prints_json_and_draws(model_dir: Path, predictor: Predictor, images: dict[str, Path],
                                      tmp_path: Path) -> None:
    out = tmp_path / "drawn.png"
    r = run("ground", images["wide"], "the red circle", "--model", model_dir, "--json", "--draw", out,
            "--max-new-tokens", "5")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout.splitlines()[0])
    same = predictor.generate([Request.ask(REC_PROMPT.format(expression="the red circle"), images["wide"],
                                           max_new_tokens=5)])[0]
    assert result["answer"] == same.text and result["image_size"] == [64, 32]
    assert result["box"] is None  # an untrained model finds nothing, and says so
    drawn = Image.open(out)
    assert drawn.width >= 448 and drawn.width / drawn.height == 2  # the image, enlarged, nothing drawn


def test_describe(model_dir: Path, predictor: Predictor, images: dict[str, Path], tmp_path: Path) -> None:
    r = run("describe", images["tall"], "--model", model_dir, "--json", "--max-new-tokens", "4",
            "--draw", tmp_path / "d.png")
    assert r.exit_code == 0, r.output
    answer = json.loads(r.stdout.splitlines()[0])
    assert answer["text"] == predictor.generate([Request.ask(DESCRIBE_PROMPT, images["tall"], max_new_tokens=4)])[0].text
    assert (tmp_path / "d.png").is_file()


def test_chat_reads_commands_and_messages_from_stdin(model_dir: Path, predictor: Predictor,
                                                     images: dict[str, Path]) -> None:
    script = "\n".join([
        "/help",
        "Hello?",  # no image yet: a text-only turn
        f"/image {images['wide']}",  # new conversation about the image
        "/object 4,2,40,30",
        "What is <object>?",
        "And now?",
        "/object 1,1,999,999",  # outside the image: an error, the conversation goes on
        "/bogus",
        "/quit",
        "never read",
    ]) + "\n"
    r = run("chat", "--model", model_dir, "--max-new-tokens", "4", input=script)
    assert r.exit_code == 0, r.output
    hello = predictor.chat([Turn("user", "Hello?")], max_new_tokens=4).text
    box = Box.from_pixels(4, 2, 40, 30, 64, 32)
    first = predictor.chat([Turn(Role.USER.value, "What is <object>?")], images["wide"],
                           [ObjectRef(box, Show.IMAGE.value)], max_new_tokens=4).text
    second = predictor.chat([Turn("user", "What is <object>?"), Turn("assistant", first), Turn("user", "And now?")],
                            images["wide"], [box], max_new_tokens=4).text
    out = r.stdout
    assert "/object x1,y1,x2,y2" in out  # the help text
    assert hello in out and "image " in out and "(64x32)" in out
    assert out.index(first) < out.index(second) or first == second
    assert "is not a box inside the 64x32 image" in r.stderr
    assert "unknown command /bogus" in r.stderr
    assert "never read" not in out


def test_batch_is_resumable(model_dir: Path, predictor: Predictor, images: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    rows = [
        {"id": "a", "prompt": "Output the coordinate of the star.", "image": str(images["wide"])},
        {"id": "b", "prompt": "What is <object>?", "image": images["square"].name,
         "objects": [{"box": [0.1, 0.1, 0.5, 0.5]}], "max_new_tokens": 3},
        {"id": "c", "messages": [{"role": "user", "content": "Hi"}]},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "text": "kept", "finish_reason": "stop", "boxes": []}\n{"id": "b", "te')
    r = run("batch", src, out, "--model", model_dir, "--image-root", images["square"].parent, "--max-new-tokens", "4",
            "--batch-size", "2")
    assert r.exit_code == 0, r.output
    assert "2 answered, 1 already done, 3 in all" in r.stdout and "cut off" in r.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["a", "b", "c"] and lines[0]["text"] == "kept"
    want_b = predictor.generate([Request.ask("What is <object>?", images["square"],
                                             [ObjectRef(Box(0.1, 0.1, 0.5, 0.5), Show.IMAGE.value)],
                                             max_new_tokens=3)])[0]
    assert lines[1]["text"] == want_b.text and lines[1]["finish_reason"] == want_b.finish_reason
    assert lines[2]["text"] == predictor.generate([Request.ask("Hi", max_new_tokens=4)])[0].text
    again = run("batch", src, out, "--model", model_dir, "--image-root", images["square"].parent)
    assert again.exit_code == 0 and "0 answered, 3 already done" in again.stdout
    assert len(out.read_text().splitlines()) == 3


def test_attention_writes_a_heatmap(model_dir: Path, images: dict[str, Path], tmp_path: Path) -> None:
    out, grid = tmp_path / "map.png", tmp_path / "map.json"
    r = run("attention", images["wide"], "Output the coordinate of the star.", "--model", model_dir, "--out", out,
            "--answer", "A star [0.100,0.300,0.400,0.600].", "--rows", "coords", "--grid-out", grid)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (64, 32)
    data = json.loads(grid.read_text())
    assert len(data["grid"]) == 8 and abs(sum(map(sum, data["grid"])) - 1) < 1e-6
    # The coordinate tokens (a token that also holds the closing full stop counts: it overlaps the box).
    assert "".join(data["tokens"]).strip().removesuffix(".") == "[0.100,0.300,0.400,0.600]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ground", "{img}", "x", "--model", "{tmp}"], "not a model directory"),
        (["ground", "{tmp}/missing.png", "x", "--model", "{model}"], "does not exist"),
        (["attention", "{img}", "hi", "--model", "{model}", "--out", "{tmp}/m.png", "--rows", "everything"], "unknown rows"),
        (["batch", "{tmp}/none.jsonl", "{tmp}/o.jsonl", "--model", "{model}"], "does not exist"),
        (["describe", "{img}", "--model", "{model}", "--dtype", "fp4"], "unknown dtype"),
        (["serve", "--model", "{model}", "--allow-dir", "{tmp}/nope"], "does not exist"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str, model_dir: Path, images: dict[str, Path],
                                  tmp_path: Path) -> None:
    filled = [a.format(img=images["wide"], tmp=tmp_path, model=model_dir) for a in args]
    r = run(*filled)
    assert r.exit_code == 2
    assert message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.output


def test_batch_input_mistakes_name_the_line(model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "prompt": "hi"}\n{"id": "a", "prompt": "again"}\n')
    r = run("batch", src, tmp_path / "o.jsonl", "--model", model_dir)
    assert r.exit_code == 2 and f"{src}:2: id 'a' already used on line 1" in r.stderr
    src.write_text('{"id": "a", "prompt": "hi", "image": "gone.png"}\n')
    r = run("batch", src, tmp_path / "o.jsonl", "--model", model_dir)
    assert r.exit_code == 2 and "image gone.png not found" in r.stderr
    src.write_text('{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": "<object>?", "objects": [{"box": [0.5, 0.5, 0.2, 0.9]}]}\n')
    r = run("batch", src, tmp_path / "o.jsonl", "--model", model_dir)
    assert r.exit_code == 2 and f"{src}:2: id 'b'" in r.stderr and "x1 < x2" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()  # nothing half-done: mistakes are found before decoding


def test_serve_command_runs_the_server(model_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tg_infer.cli", "serve", "--model", str(model_dir), "--port",
                             str(port), "--name", "cli-model", "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.3)
        assert health["model"] == "cli-model"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                       json={"model": "cli-model", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
    finally:
        proc.terminate()
        proc.wait(30)
