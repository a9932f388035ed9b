"""A small shapes world, tiny recipes and helpers for running training in-process or as subprocesses."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub

from tg_data.shapes import ShapesConfig, write_shapes_dataset

# The tiny preset cut further down so a training step takes a fraction of a second on a 2-core CPU.
SMALL_LLM = {
    "text_num_hidden_layers": 1,
    "text_hidden_size": 64,
    "text_intermediate_size": 128,
    "text_num_attention_heads": 2,
    "text_num_key_value_heads": 1,
}


@pytest.fixture(scope="session")
def small_llm() -> dict[str, Any]:
    return dict(SMALL_LLM)


@pytest.fixture(scope="session")
def shapes_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training and 4 test scenes at the tiny preset's image size: about 70 training samples of every task."""
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(str(root), {"train": 8, "test": 4}, seed=0, config=ShapesConfig(image_size=64, max_shapes=3))
    return root


def base_table(output_dir: Path, data_path: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A stage-2 recipe for the small tiny model; ``sections`` update its tables (``data`` replaces the list)."""
    table: dict[str, Any] = {
        "name": "test",
        "stage": "2",
        "output_dir": str(output_dir),
        "seed": 7,
        "model": {"preset": "tiny", "overrides": dict(SMALL_LLM)},
        "train": {"projector": True, "llm": True},
        "optim": {"lr": 1e-3, "max_steps": 4, "warmup_ratio": 0.25},
        "batch": {"global": 8, "micro": 4, "max_length": 512, "num_workers": 0},
        "checkpoint": {"every_steps": 1000, "keep_last": 2},
        "logging": {"every_steps": 1, "progress": False, "tensorboard": False},
        "data": [{"path": data_path}],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(table.get(key), dict):
            table[key] = {**table[key], **value}
        else:
            table[key] = copy.deepcopy(value)
    return table


def write_toml(path: Path, table: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(table))
    return path


@pytest.fixture(scope="session")
def recipe_file(shapes_world: Path) -> Callable[..., Path]:
    """``recipe_file(directory, name, output_dir=None, **sections)``: write a tiny recipe file there."""

    def write(directory: Path, name: str = "recipe", output_dir: Path | None = None, **sections: Any) -> Path:
        out = output_dir or directory / f"run-{name}"
        table = base_table(out, str(shapes_world / "train.parquet"), **sections)
        return write_toml(directory / f"{name}.toml", table)

    return write


@pytest.fixture
def make_recipe(tmp_path: Path, recipe_file: Callable[..., Path]) -> Callable[..., Path]:
    """Write a tiny recipe file into this test's directory; keyword arguments update its sections."""

    def make(name: str = "recipe", output_dir: Path | None = None, **sections: Any) -> Path:
        return recipe_file(tmp_path, name, output_dir, **sections)

    return make


DIST_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment minus the one-rank process group that in-process training set up
    (a child that inherited it would try to join this process's group)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARIABLES}
    return {**env, **extra}


@pytest.fixture(scope="session")
def clean_env() -> Callable[..., dict[str, str]]:
    return child_env


def run_python(code: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a Python snippet in a fresh interpreter (as a user's script would be)."""
    script = cwd / "script.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=child_env(**(env or {})), capture_output=True,
        text=True, timeout=timeout,
    )


@pytest.fixture(scope="session")
def python_runner() -> Callable[..., subprocess.CompletedProcess]:
    return run_python
