from __future__ import annotations

from pathlib import Path

import pytest

from tg_synth.config import ConfigError, config_from_dict, load_config, resolve_config_path, shipped_configs


def test_shipped_shapes_config_loads_and_uses_oracles() -> None:
    assert "shapes" in shipped_configs()
    cfg = load_config("shapes")
    assert cfg.input.kind == "shapes"
    assert cfg.backends.mllm.kind == "oracle" and cfg.backends.detector.kind == "oracle"
    assert cfg.output.dir == "runs/synth-shapes"
    assert sum(cfg.qa.counts().values()) > 0


def test_overrides_apply_with_toml_types() -> None:
    cfg = load_config("shapes", ["qa.rec=7", "filters.max_option_iou=0.5", "output.dir=/tmp/x", "progress=false"])
    assert cfg.qa.rec == 7
    assert cfg.filters.max_option_iou == 0.5
    assert cfg.output.dir == "/tmp/x"
    assert cfg.progress is False


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"qa": {"recc": 1}}, "unknown key(s) ['recc']"),
        ({"qa": {"rec": "many"}}, "config.qa.rec must be an integer"),
        ({"filters": {"min_object_area": 0.6, "max_object_area": 0.5}}, "min_object_area < max_object_area"),
        ({"backends": {"mllm": {"kind": "openai"}}}, "needs base_url"),
        ({"backends": {"detector": {"kind": "yolo"}}}, "'oracle' or 'grounding_dino'"),
        ({"input": {"kind": "images", "root": "/tmp"}}, "exactly one of image_list"),
        ({"qa": {"max_options": 1}}, "max_options must be >= 2"),
    ],
)
def test_bad_configs_name_the_problem(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        config_from_dict(data)
    assert message in str(e.value)


def test_oracle_backends_refuse_non_shapes_input(tmp_path: Path) -> None:
    data = {"input": {"kind": "images", "root": str(tmp_path), "glob": "*.png"}}
    with pytest.raises(ConfigError, match="oracle backends answer from shapes-world truth"):
        config_from_dict(data)


def test_unknown_config_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="shipped: \\['shapes'"):
        resolve_config_path("no-such-config")


def test_bad_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[qa\nrec = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(str(bad))


def test_the_readme_config_reference_lists_the_defaults() -> None:
    import re
    import tomllib

    from tg_synth.config import SynthConfig

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"```toml\n(.*?)```", readme.split("## Configuration", 1)[1], re.DOTALL)
    assert block is not None
    data = tomllib.loads(block.group(1))
    assert config_from_dict(data) == SynthConfig()
    # every field is documented, in its table
    from dataclasses import fields

    from tg_synth.config import ChatConfig

    tables = {"": (SynthConfig, data), "backends.mllm": (ChatConfig, data["backends"]["mllm"])}
    for name in ("input", "grounding", "filters", "qa", "output"):
        tables[name] = (type(getattr(SynthConfig(), name)), data[name])
    tables["backends.detector"] = (type(SynthConfig().backends.detector), data["backends"]["detector"])
    for name, (cls, table) in tables.items():
        documented = set(table)
        expected = {f.name for f in fields(cls)} - ({"backends", "input", "grounding", "filters", "qa", "output"}
                                                    if cls is SynthConfig else set())
        assert expected <= documented | ({"prompts"} if cls is SynthConfig else set()), (name, expected - documented)
