from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tg_synth.cli import app
from tg_synth.prompting import CHAT_STEPS, PromptError, PromptSet, all_templates, get_template


@pytest.mark.parametrize("step", CHAT_STEPS)
def test_every_chat_step_has_a_template_that_renders_its_input(step: str) -> None:
    t = get_template(step)
    assert t.version.startswith("v") and t.system and "$input" in t.user
    inputs = {"image_id": "img-1", "objects": [{"id": 1, "name": "red car", "box": "[0.100,0.200,0.300,0.400]"}]}
    values = {"max_objects": 5, "max_relations": 4, "rounds": 2}
    messages = t.messages(inputs, "data:image/png;base64,AAAA", **values)
    assert messages[0] == {"role": "system", "content": t.system}
    parts = messages[1]["content"]
    text = parts[0]["text"]
    assert "$" not in text  # every placeholder filled
    block = text.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(block) == inputs
    assert parts[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def test_template_identity_changes_with_its_text() -> None:
    t = get_template("recognize")
    assert t.id.startswith("recognize/v1#")
    from dataclasses import replace

    edited = replace(t, text=t.text + "\n# one more line\n")
    assert edited.id != t.id


def test_prompt_set_selects_versions_and_refuses_unknown() -> None:
    ids = PromptSet.select().ids()
    assert set(CHAT_STEPS) | {"repair", "questions"} <= set(ids)
    with pytest.raises(PromptError, match="has no version 'v9'"):
        PromptSet.select({"recognize": "v9"})
    with pytest.raises(PromptError, match="unknown step"):
        PromptSet.select({"recognise": "v1"})


def test_repair_template_names_the_error() -> None:
    text = get_template("repair").render_user(error="not JSON: Expecting value at character 0")
    assert "not JSON: Expecting value at character 0" in text


def test_cli_prints_every_template() -> None:
    result = CliRunner().invoke(app, ["prompts"])
    assert result.exit_code == 0
    for (step, version), t in all_templates().items():
        assert f"===== {step} {version} ({t.id}) =====" in result.output
    one = CliRunner().invoke(app, ["prompts", "describe"])
    assert one.exit_code == 0 and "===== describe v1" in one.output and "recognize" not in one.output.split("\n")[0]
    bad = CliRunner().invoke(app, ["prompts", "nope"])
    assert bad.exit_code == 1 and "no prompt template for step 'nope'" in bad.output
