"""Pipelines: stages run one after another, each starting from the previous stage's export.

A pipeline file names its stage recipes and may ask for a shapes world to be generated first.
Recipe strings can use ``${output_dir}``, ``${data}`` (the generated shapes world), ``${towers}``
(the towers it pretrains, see ``tg_train.towers``) and ``${prev}`` (the previous stage's export);
the pipeline fills them in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tg_train.recipe import (
    Recipe,
    RecipeError,
    _set_path,
    build_from_table,
    parse_override,
    read_table,
    resolve_recipe_path,
    validate,
)


@dataclass
class ShapesSection:
    """A shapes world to generate under ``${output_dir}/shapes`` before the first stage."""

    train: int = 0
    val: int = 0
    test: int = 0
    seed: int = 0
    image_size: int = 224
    min_shapes: int = 1
    max_shapes: int = 5
    size_ranges: dict[str, Any] = field(default_factory=dict)
    rec_rounds: int = 1  # multi-round REC conversations in the train split


@dataclass
class TowersSection:
    """Tower pretraining (``tg_train.towers``) into ``${output_dir}/towers`` before the first stage; 0 steps: none."""

    steps: int = 0
    batch: int = 64
    lr: float = 2e-3
    warmup_steps: int = 20
    box_weight: float = 10.0  # L1 on [0, 1] coordinates is small beside the cross-entropies
    seed: int = 0
    log_every: int = 100
    eval_scenes: int = 512  # held-out scenes the final accuracies are measured on


@dataclass
class StageEntry:
    recipe: str = ""
    set: list[str] = field(default_factory=list)  # --set overrides for this stage


@dataclass
class EvalSection:
    split: str = "test"
    max_samples: int = 0  # 0: the whole split
    batch_size: int = 32


@dataclass
class Pipeline:
    name: str = ""
    description: str = ""
    output_dir: str = "runs/pipeline"
    shapes: ShapesSection = field(default_factory=ShapesSection)
    towers: TowersSection = field(default_factory=TowersSection)
    stages: list[StageEntry] = field(default_factory=list)
    eval: EvalSection = field(default_factory=EvalSection)
    source_path: str = ""

    @property
    def data_dir(self) -> Path:
        return Path(self.output_dir) / "shapes"

    @property
    def towers_dir(self) -> Path:
        return Path(self.output_dir) / "towers"

    def stage_dir(self, index: int) -> Path:
        return Path(self.output_dir) / f"stage{index + 1}"


_VAR = re.compile(r"\$\{(\w+)\}")


def load_pipeline(name_or_path: str, overrides: list[str] | None = None) -> Pipeline:
    path = resolve_recipe_path(name_or_path)
    pipeline = build_from_table(Pipeline, read_table(path, overrides), path)
    if not pipeline.stages:
        raise RecipeError(f"{path}: a pipeline needs at least one [[stages]] entry")
    for stage in pipeline.stages:
        resolve_recipe_path(stage.recipe)  # fail now, not after an hour of training
    return pipeline


def _substitute(value: Any, variables: dict[str, str], where: str) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in variables:
                raise RecipeError(f"{where}: unknown variable ${{{m.group(1)}}}; known: {sorted(variables)}")
            return variables[m.group(1)]

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, where) for k, v in value.items()}
    return value


def stage_recipe(pipeline: Pipeline, index: int, extra: list[str] | None = None, check_files: bool = True) -> Recipe:
    """The stage's recipe with the pipeline's variables, output directory and starting model filled in."""
    entry = pipeline.stages[index]
    path = resolve_recipe_path(entry.recipe)
    table = read_table(path)
    variables = {"output_dir": pipeline.output_dir, "data": str(pipeline.data_dir), "towers": str(pipeline.towers_dir)}
    if index > 0:
        variables["prev"] = str(pipeline.stage_dir(index - 1) / "export")
    table = _substitute(table, variables, str(path))
    table["output_dir"] = str(pipeline.stage_dir(index))
    if index > 0:
        table.setdefault("model", {}).pop("preset", None)
        table["model"]["init"] = variables["prev"]
    for item in [*entry.set, *(extra or [])]:
        _set_path(table, *parse_override(item))
    recipe = build_from_table(Recipe, table, path)
    problems = validate(recipe, check_files=check_files)
    if problems:
        raise RecipeError(f"{path} (stage {index + 1} of {pipeline.name or pipeline.source_path}): " + "; ".join(problems))
    return recipe


def generate_shapes(pipeline: Pipeline) -> dict[str, Any] | None:
    """Write the pipeline's shapes world (once: an existing complete one is reused)."""
    s = pipeline.shapes
    if not (s.train or s.val or s.test):
        return None
    from tg_data.shapes import ShapesConfig, TaskMix, read_manifest, write_shapes_dataset

    size_ranges = {k: tuple(v) for k, v in s.size_ranges.items()} if s.size_ranges else None
    config = ShapesConfig(
        image_size=s.image_size, min_shapes=s.min_shapes, max_shapes=s.max_shapes,
        **({"size_ranges": size_ranges} if size_ranges else {}),
    )
    wanted = {"train": s.train, "val": s.val, "test": s.test}
    root = pipeline.data_dir
    if (root / "manifest.json").is_file():
        manifest = read_manifest(str(root))
        have = {k: v["scenes"] for k, v in manifest["splits"].items()}
        if manifest.get("seed") == s.seed and manifest.get("config") == _jsonable(config.to_dict()) and all(
            have.get(k, 0) == n for k, n in wanted.items() if n
        ):
            return manifest
    return write_shapes_dataset(
        str(root), {k: n for k, n in wanted.items() if n}, seed=s.seed, config=config,
        split_mixes={"train": TaskMix(rec_rounds=s.rec_rounds)} if s.rec_rounds > 1 else None,
        progress=True,
    )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(d))


def run_pipeline(pipeline: Pipeline, extra: list[str] | None = None) -> list[Any]:
    """Generate data if asked, then train every stage in order; returns each stage's result."""
    from tg_train.engine import init_distributed
    from tg_train.trainer import train

    # unknown keys and wrong types: fail before any training
    checked = [stage_recipe(pipeline, index, extra, check_files=False) for index in range(len(pipeline.stages))]
    dist = init_distributed()
    if dist.is_main:
        generate_shapes(pipeline)
        if pipeline.towers.steps:
            from tg_train.towers import pretrain_towers

            first = checked[0].model
            pretrain_towers(pipeline.towers, pipeline.data_dir, pipeline.towers_dir, first.preset or "tiny", first.overrides)
    if dist.world > 1:
        import torch.distributed

        torch.distributed.barrier()
    results = []
    for index in range(len(pipeline.stages)):
        recipe = stage_recipe(pipeline, index, extra)
        results.append(train(recipe, dist, stage_label=recipe.stage))
    return results
