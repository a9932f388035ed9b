"""Recipes: one TOML file says everything about a training stage; ``--set key=value`` edits it.

Every field is typed and checked before anything starts: an unknown key, a wrong type or a
missing file is one clear error that names the field and the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

STAGES = ("1a", "1b", "2", "3", "custom")
OPTIMIZERS = ("adamw", "muon")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file, the field and what to do."""


@dataclass
class ModelSection:
    preset: str = ""  # a tg-model preset name (tiny, tgpt-1.5b, ...)
    init: str = ""  # or a tg-model export directory (the previous stage's)
    llm: str = ""  # with a preset: another LLM hub name or local directory
    encoder_weights: list[str] = field(default_factory=list)  # with a preset: local tower checkpoints, in order
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    # torch.compile the LLM's decoder: its many small elementwise ops fused (a warm step about 1.15x
    # faster for the quickstart's tiny LLM on a CPU) for a one-off compile of 20-30 s
    compile: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # preset config overrides (object_grid, text_*)


@dataclass
class TrainSection:
    """What is trained. Encoders are frozen in every stage of the method."""

    projector: bool = True
    llm: bool = True
    encoder: bool = False
    projector_lr: float = 0.0  # 0: the optimiser's lr


@dataclass
class OptimSection:
    # adamw | muon: Muon (DeepSpeed's, ZeRO-aware) orthogonalises the updates of the LLM's and the
    # projector's weight matrices; embeddings, the LM head, norms and biases stay on AdamW at ``lr``
    name: str = "adamw"
    lr: float = 2e-5
    muon_lr: float = 0.02  # with name = "muon": the matrices' learning rate (on the same schedule)
    muon_momentum: float = 0.95
    # Newton-Schulz: "gram" (DeepSpeed's default; fp16 where supported) or "standard" (bf16 where supported)
    muon_ns_method: str = "gram"
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    scheduler: str = "cosine"  # cosine | linear | constant
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs


@dataclass
class BatchSection:
    global_size: int = 32  # samples per optimiser step, over all ranks
    micro: int = 4  # samples per rank per forward
    max_length: int = 2048
    group_by_length: bool = True
    packing: bool = False
    num_workers: int = 2
    image_cache_mb: float = 0.0  # processed pixels kept per file (in each worker), for data read many times
    feature_cache_mb: float = 0.0  # frozen towers' features kept per image content, in the training process


@dataclass
class PrecisionSection:
    bf16: str = "auto"  # auto: on when the accelerator supports it | true | false
    tf32: bool = True


@dataclass
class DeepSpeedSection:
    zero_stage: int = 2
    config: str = ""  # a user's DeepSpeed JSON, taken as-is
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 500_000_000
    allgather_bucket_size: int = 500_000_000
    offload_optimizer: bool = False


@dataclass
class CheckpointSection:
    every_steps: int = 500
    keep_last: int = 2
    resume: str = "auto"  # auto: the latest complete checkpoint in output_dir | never | a directory


@dataclass
class LoggingSection:
    every_steps: int = 10
    tensorboard: bool = True
    progress: bool = True


@dataclass
class DataSource:
    path: str = ""
    format: str = "auto"  # auto | tg | llava
    image_root: str = ""  # default: the file's directory
    epochs: float = 0.0  # passes over this source per stage epoch (fractions sample a subset)
    weight: float = 0.0  # or: share of the mixture
    tasks: list[str] = field(default_factory=list)  # keep only these tasks
    max_objects: int = 0  # > 0: keep only samples with at most this many objects (a curriculum's easy start)
    max_samples: int = 0
    # each round of a multi-round sample becomes a sample of its own, with the image: for sources
    # whose rounds are independent questions (multi-round REC), more questions per token
    split_rounds: bool = False


@dataclass
class Recipe:
    name: str = ""
    description: str = ""
    stage: str = "custom"
    output_dir: str = "runs/train"
    seed: int = 42
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    batch: BatchSection = field(default_factory=BatchSection)
    precision: PrecisionSection = field(default_factory=PrecisionSection)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    data: list[DataSource] = field(default_factory=list)
    source_path: str = ""  # where the recipe was read from (set by the loader)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source_path")
        d["batch"] = _rename(d["batch"], {"global_size": "global"})
        return d


_ALIASES = {BatchSection: {"global": "global_size"}}


def _rename(d: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(k, k): v for k, v in d.items()}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except RecipeError:
                continue
        raise RecipeError(f"{where}: expected {tp}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a table [{where}], got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise RecipeError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    aliases = _ALIASES.get(cls, {})
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source_path"}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        name = aliases.get(key, key)
        if name not in known:
            shown = sorted({next((a for a, n in aliases.items() if n == k), k) for k in known})
            prefix = f"{where}." if where else ""
            raise RecipeError(f"unknown key {prefix}{key!r}; valid keys here: {', '.join(shown)}")
        kwargs[name] = _coerce(value, hints[name], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _set_path(table: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = table
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise RecipeError(f"--set {dotted}: {'.'.join(keys[:i])} has {len(node)} entries; use an index")
            node = node[int(key)]
        else:
            if key not in node and keys[i + 1].isdigit():
                where = ".".join(keys[: i + 1])
                raise RecipeError(
                    f"--set {dotted}: {where} is not in the recipe file, so it has no entries to index; "
                    f"set the whole list instead, e.g. --set {where}=[...]"
                )
            node = node.setdefault(key, {})
        if not isinstance(node, (dict, list)):
            raise RecipeError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a table")
    if isinstance(node, list):
        last = keys[-1]
        if not last.isdigit() or int(last) >= len(node):
            raise RecipeError(f"--set {dotted}: {'.'.join(keys[:-1])} has {len(node)} entries; use an index")
        node[int(last)] = value
        return
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``key.sub=value`` with value in TOML syntax (strings may be bare)."""
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected key=value, e.g. --set optim.lr=1e-4")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def shipped_recipes() -> dict[str, Path]:
    """Recipes that ship with tg-train, by name."""
    root = resources.files("tg_train") / "recipes"
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_recipe_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise RecipeError(
        f"recipe {name_or_path!r} is neither a file nor a shipped recipe; shipped: {', '.join(sorted(shipped))}"
    )


def read_table(path: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A TOML file as a table, with ``--set`` overrides applied."""
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML ({e})") from None
    for item in overrides or []:
        _set_path(table, *parse_override(item))
    return table


def build_from_table(cls: type, table: dict[str, Any], path: Path) -> Any:
    """Type-check a table into ``cls``; errors name the file."""
    try:
        built = _build(cls, table, "")
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    built.source_path = str(path)
    return built


def load_recipe(name_or_path: str, overrides: list[str] | None = None, check_files: bool = True) -> Recipe:
    """Read, override, type-check and validate a recipe."""
    path = resolve_recipe_path(name_or_path)
    recipe = build_from_table(Recipe, read_table(path, overrides), path)
    problems = validate(recipe, check_files=check_files)
    if problems:
        raise RecipeError(f"{path}: " + "; ".join(problems))
    return recipe


def validate(recipe: Recipe, check_files: bool = True) -> list[str]:
    out: list[str] = []
    if recipe.stage not in STAGES:
        out.append(f"stage must be one of {list(STAGES)}, got {recipe.stage!r}")
    m = recipe.model
    if bool(m.preset) == bool(m.init):
        out.append("[model] needs exactly one of preset = NAME or init = EXPORT_DIR")
    if m.init and check_files and not (Path(m.init) / "config.json").is_file():
        out.append(f"model.init {m.init!r} is not a tg-model export (no config.json); run the previous stage first")
    for i, path in enumerate(m.encoder_weights):
        if path and check_files and not Path(path).is_file():
            out.append(f"model.encoder_weights[{i}] {path!r} is not a file (a local tower checkpoint)")
    if recipe.train.encoder:
        out.append("train.encoder = true: the encoders are frozen in every stage of this method")
    if not (recipe.train.projector or recipe.train.llm):
        out.append("[train] trains nothing: set projector and/or llm to true")
    o = recipe.optim
    if o.lr <= 0:
        out.append(f"optim.lr must be positive, got {o.lr}")
    if o.name not in OPTIMIZERS:
        out.append(f"optim.name must be one of {list(OPTIMIZERS)}, got {o.name!r}")
    if o.name == "muon":
        if o.muon_lr <= 0 or not 0 <= o.muon_momentum < 1:
            out.append(f"optim.muon_lr must be positive and optim.muon_momentum in [0, 1), got {o.muon_lr}, "
                       f"{o.muon_momentum}")
        if o.muon_ns_method not in ("gram", "standard"):
            out.append(f"optim.muon_ns_method must be 'gram' or 'standard', got {o.muon_ns_method!r}")
        if recipe.deepspeed.config:
            out.append("optim.name = 'muon' writes the optimizer into the DeepSpeed config that tg-train builds; "
                       "with deepspeed.config, put a Muon optimizer block in that JSON and leave optim.name = 'adamw'")
        if recipe.train.projector_lr > 0:
            out.append("train.projector_lr is an AdamW setting: with optim.name = 'muon' the projector's matrices "
                       "take optim.muon_lr; remove projector_lr or use optim.name = 'adamw'")
    if o.scheduler not in ("cosine", "linear", "constant"):
        out.append(f"optim.scheduler must be cosine, linear or constant, got {o.scheduler!r}")
    if not 0 <= o.warmup_ratio < 1:
        out.append(f"optim.warmup_ratio must be in [0, 1), got {o.warmup_ratio}")
    if o.epochs <= 0 and o.max_steps <= 0:
        out.append("optim.epochs or optim.max_steps must be positive")
    b = recipe.batch
    if b.micro <= 0 or b.global_size <= 0 or b.global_size % b.micro:
        out.append(f"batch.global ({b.global_size}) must be a positive multiple of batch.micro ({b.micro})")
    if b.max_length <= 0 or b.num_workers < 0:
        out.append(f"batch.max_length must be positive and batch.num_workers >= 0, got {b.max_length}, {b.num_workers}")
    if b.image_cache_mb < 0 or b.feature_cache_mb < 0:
        out.append(f"batch.image_cache_mb and batch.feature_cache_mb must be >= 0 (0: off), got {b.image_cache_mb}, "
                   f"{b.feature_cache_mb}")
    if recipe.checkpoint.every_steps <= 0 or recipe.logging.every_steps <= 0:
        out.append("checkpoint.every_steps and logging.every_steps must be positive")
    if recipe.checkpoint.keep_last < 0:
        out.append(f"checkpoint.keep_last must be >= 0 (0 keeps all), got {recipe.checkpoint.keep_last}")
    if recipe.precision.bf16 not in ("auto", "true", "false"):
        out.append(f"precision.bf16 must be 'auto', 'true' or 'false', got {recipe.precision.bf16!r}")
    if recipe.deepspeed.zero_stage not in (0, 1, 2, 3):
        out.append(f"deepspeed.zero_stage must be 0-3, got {recipe.deepspeed.zero_stage}")
    if recipe.deepspeed.config and check_files and not Path(recipe.deepspeed.config).is_file():
        out.append(f"deepspeed.config {recipe.deepspeed.config!r} does not exist")
    if not recipe.data:
        out.append("no [[data]] sources")
    for i, src in enumerate(recipe.data):
        where = f"data[{i}]"
        if not src.path:
            out.append(f"{where}.path is empty")
        elif check_files and "://" not in src.path and not Path(src.path).exists():
            out.append(f"{where}.path {src.path!r} does not exist")
        if src.format not in ("auto", "tg", "llava"):
            out.append(f"{where}.format must be auto, tg or llava, got {src.format!r}")
        if src.epochs and src.weight:
            out.append(f"{where}: give epochs or weight, not both")
        if src.epochs < 0 or src.weight < 0:
            out.append(f"{where}: epochs and weight must be >= 0")
    return out
