"""``pip install tg-eval`` alone must score prediction files: nothing on the scoring path imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


def test_scoring_never_imports_torch(shared_fixtures: Path, tmp_path: Path) -> None:
    pope = shared_fixtures / "pope"
    questions = [json.loads(line) for line in (pope / "llava_pope_test.jsonl").read_text().splitlines()]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q["question_id"], "text": "No"}) + "\n" for q in questions))
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        import tg_eval
        for m in pkgutil.walk_packages(tg_eval.__path__, "tg_eval."):
            importlib.import_module(m.name)
        from typer.testing import CliRunner
        from tg_eval.cli import app
        runner = CliRunner()
        r = runner.invoke(app, ["pope", "--questions", {str(pope / "llava_pope_test.jsonl")!r}, "--labels", {str(pope)!r},
                                "--answers", {str(answers)!r}, "--json", {str(tmp_path / "pope.json")!r}])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["compare", {str(tmp_path / "pope.json")!r}, "--png", {str(tmp_path / "c.png")!r}])
        assert r.exit_code == 0, r.output
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "tg_model", "tg_infer"))
        print("HEAVY", heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert json.loads((tmp_path / "pope.json").read_text())["rows"]["popular"]["yes_ratio"] == 0.0
