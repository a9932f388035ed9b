"""The README's example runs as written and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tg_model.modeling import TinyGroundingGPTForCausalLM

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_readme_example_builds_generates_saves_and_reloads(tmp_path, monkeypatch, capsys):
    blocks = _python_blocks(README.read_text())
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(blocks[0], str(README), "exec"), namespace)

    printed = capsys.readouterr().out
    assert printed.startswith("<image>\nOutput the coordinate of ")
    assert namespace["sample"].task == "rec" and namespace["sample"].image == "scene.png"
    output, prompt_ids = namespace["output"], namespace["batch"]["input_ids"]
    assert output.shape == (1, prompt_ids.shape[1] + 12)
    assert torch.equal(output[:, : prompt_ids.shape[1]], prompt_ids)
    assert isinstance(namespace["reloaded"], TinyGroundingGPTForCausalLM)
    assert torch.equal(namespace["again"], output)
    assert namespace["reloaded_tokenizer"].get_vocab() == namespace["tokenizer"].get_vocab()
    assert not Path(namespace["directory"]).exists()  # the example cleans up after itself
