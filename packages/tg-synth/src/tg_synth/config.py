"""The run configuration: one TOML file (inputs, backends, thresholds, QA counts, output).

Every field has a default, so a config names only what it changes. Unknown keys and wrong types
are refused before anything runs, with the file, the table and the fix in the message.
Relative paths resolve against the current working directory.
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


class ConfigError(ValueError):
    """A config that cannot run; the message names where and what to fix."""


@dataclass
class InputConfig:
    """Where the images come from: the shapes world, or an image list with optional annotations."""

    kind: str = "shapes"  # "shapes" | "images"
    # shapes: an existing tg-data shapes dataset, or empty to generate one into OUT/shapes
    shapes_root: str = ""
    shapes_split: str = "train"
    shapes_scenes: int = 48
    shapes_seed: int = 0
    # images: a JSON Lines list ({id, image, width?, height?, annotations?}) or a glob, under `root`
    root: str = ""
    image_list: str = ""
    glob: str = ""
    limit: int = 0  # 0: all

    def validate(self, where: str) -> None:
        if self.kind not in ("shapes", "images"):
            raise ConfigError(f"{where} [input] kind must be 'shapes' or 'images', got {self.kind!r}")
        if self.kind == "images":
            if not self.root:
                raise ConfigError(f"{where} [input] kind = 'images' needs root = the directory image paths are relative to")
            if bool(self.image_list) == bool(self.glob):
                raise ConfigError(f"{where} [input] kind = 'images' needs exactly one of image_list = FILE.jsonl or glob = PATTERN")
        if self.shapes_scenes < 1:
            raise ConfigError(f"{where} [input] shapes_scenes must be >= 1, got {self.shapes_scenes}")
        if self.limit < 0:
            raise ConfigError(f"{where} [input] limit must be >= 0 (0 = all), got {self.limit}")


@dataclass
class ChatConfig:
    """An MLLM/LLM backend: the shapes-world oracle, or any OpenAI-compatible chat endpoint."""

    kind: str = "oracle"  # "oracle" | "openai"
    model: str = ""
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    timeout_s: float = 60.0
    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    temperature: float = 0.2
    max_tokens: int = 1024
    json_mode: bool = False  # send response_format = {"type": "json_object"}
    cost_per_1k_prompt: float = 0.0
    cost_per_1k_completion: float = 0.0
    # oracle only: how often it lists an object that is not there, or a generic label
    hallucination_rate: float = 0.15
    generic_label_rate: float = 0.2
    max_relations: int = 12

    def validate(self, where: str) -> None:
        if self.kind not in ("oracle", "openai"):
            raise ConfigError(f"{where} kind must be 'oracle' or 'openai', got {self.kind!r}")
        if self.kind == "openai":
            if not self.base_url:
                raise ConfigError(f"{where} kind = 'openai' needs base_url (e.g. https://api.openai.com/v1)")
            if not self.model:
                raise ConfigError(f"{where} kind = 'openai' needs model")
        for name in ("concurrency", "max_attempts", "max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where} {name} must be >= 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ConfigError(f"{where} timeout_s must be > 0, got {self.timeout_s}")
        for name in ("hallucination_rate", "generic_label_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{where} {name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class DetectorConfig:
    """The grounding detector: the shapes-world oracle, or GroundingDINO through transformers."""

    kind: str = "oracle"  # "oracle" | "grounding_dino"
    model: str = "IDEA-Research/grounding-dino-tiny"  # hub name or local directory
    box_threshold: float = 0.25
    text_threshold: float = 0.25
    batch_size: int = 8
    device: str = "cpu"
    max_labels_per_query: int = 16
    # oracle only
    low_confidence_rate: float = 0.1
    loose_box_rate: float = 0.1

    def validate(self, where: str) -> None:
        if self.kind not in ("oracle", "grounding_dino"):
            raise ConfigError(f"{where} kind must be 'oracle' or 'grounding_dino', got {self.kind!r}")
        for name in ("box_threshold", "text_threshold", "low_confidence_rate", "loose_box_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{where} {name} must be in [0, 1], got {getattr(self, name)}")
        if self.batch_size < 1 or self.max_labels_per_query < 1:
            raise ConfigError(f"{where} batch_size and max_labels_per_query must be >= 1")


@dataclass
class BackendsConfig:
    mllm: ChatConfig = field(default_factory=ChatConfig)
    llm: ChatConfig | None = None  # text-only steps; absent: the MLLM answers them too
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    @property
    def text(self) -> ChatConfig:
        return self.llm if self.llm is not None else self.mllm


@dataclass
class GroundingConfig:
    """Step 2: which detections become the object -> boxes dictionary S1."""

    min_confidence: float = 0.35
    max_boxes_per_object: int = 3
    duplicate_iou: float = 0.7  # two boxes above this IoU are one object (the more confident stays)
    annotation_iou: float = 0.7  # a detection this close to an existing annotation is that annotation
    max_objects: int = 20  # listed objects beyond this are ignored

    def validate(self, where: str) -> None:
        for name in ("min_confidence", "duplicate_iou", "annotation_iou"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{where} [grounding] {name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_boxes_per_object < 1 or self.max_objects < 1:
            raise ConfigError(f"{where} [grounding] max_boxes_per_object and max_objects must be >= 1")


@dataclass
class FilterConfig:
    """Step 5: object images must be neither tiny nor nearly the whole picture; options must differ."""

    min_object_area: float = 0.01  # fraction of the image's area
    max_object_area: float = 0.5
    max_option_iou: float = 0.3

    def validate(self, where: str) -> None:
        if not 0 <= self.min_object_area < self.max_object_area <= 1:
            raise ConfigError(
                f"{where} [filters] need 0 <= min_object_area < max_object_area <= 1, "
                f"got {self.min_object_area}, {self.max_object_area}"
            )
        if not 0 <= self.max_option_iou <= 1:
            raise ConfigError(f"{where} [filters] max_option_iou must be in [0, 1], got {self.max_option_iou}")


STAGE2_TASKS = ("obj2coord", "coord2obj", "text2obj", "reg", "rec", "relation")
STAGE3_TASKS = ("grounded_conv", "grounded_desc")


@dataclass
class QAConfig:
    """How many QAs of each type one image yields at most (small images yield fewer)."""

    obj2coord: int = 2
    coord2obj: int = 1
    text2obj: int = 1
    reg: int = 2
    rec: int = 2
    relation: int = 2
    grounded_conv: int = 1
    grounded_desc: int = 1
    max_options: int = 4
    conversation_rounds: int = 3
    crop_margin: float = 0.1  # object-image context margin, fraction of the box size per side

    def validate(self, where: str) -> None:
        for name in (*STAGE2_TASKS, *STAGE3_TASKS):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where} [qa] {name} must be >= 0, got {getattr(self, name)}")
        if self.max_options < 2:
            raise ConfigError(f"{where} [qa] max_options must be >= 2, got {self.max_options}")
        if not 1 <= self.conversation_rounds <= 10:
            raise ConfigError(f"{where} [qa] conversation_rounds must be in 1..10, got {self.conversation_rounds}")
        if not 0 <= self.crop_margin <= 10:
            raise ConfigError(f"{where} [qa] crop_margin must be in [0, 10], got {self.crop_margin}")

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in (*STAGE2_TASKS, *STAGE3_TASKS)}


@dataclass
class OutputConfig:
    dir: str = "runs/synth"
    shard_rows: int = 5000
    save_crops: bool = False  # also write each object image as a PNG (specs are always written)
    absolute_image_paths: bool = False
    cache: str = ""  # default: OUT/cache.sqlite

    def validate(self, where: str) -> None:
        if not self.dir:
            raise ConfigError(f"{where} [output] dir must not be empty")
        if self.shard_rows < 1:
            raise ConfigError(f"{where} [output] shard_rows must be >= 1, got {self.shard_rows}")


@dataclass
class SynthConfig:
    seed: int = 0
    progress: bool = True
    input: InputConfig = field(default_factory=InputConfig)
    backends: BackendsConfig = field(default_factory=BackendsConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    prompts: dict[str, str] = field(default_factory=dict)  # step -> version, default: the newest
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self, where: str = "config") -> None:
        self.input.validate(where)
        self.backends.mllm.validate(f"{where} [backends.mllm]")
        if self.backends.llm is not None:
            self.backends.llm.validate(f"{where} [backends.llm]")
        self.backends.detector.validate(f"{where} [backends.detector]")
        self.grounding.validate(where)
        self.filters.validate(where)
        self.qa.validate(where)
        self.output.validate(where)
        uses_oracle = (
            self.backends.mllm.kind == "oracle"
            or self.backends.text.kind == "oracle"
            or self.backends.detector.kind == "oracle"
        )
        if uses_oracle and self.input.kind != "shapes":
            raise ConfigError(
                f"{where}: the oracle backends answer from shapes-world truth, but [input] kind = "
                f"{self.input.kind!r}; use kind = 'openai' / 'grounding_dino' backends for real images"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# loading ------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp``; dataclasses are built recursively."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None  # an optional table left out (as written back in a manifest)
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{where} must be a table of strings, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set qa.rec=4")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set a.b=value`` on the raw TOML data, before validation."""
    for text in overrides:
        path, value = _parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a table")
        node[path[-1]] = value
    return data


def config_from_dict(data: dict[str, Any], where: str = "config", overrides: list[str] | None = None) -> SynthConfig:
    data = apply_overrides(dict(data), overrides or [])
    cfg = _build(SynthConfig, data, where)
    cfg.validate(where)
    return cfg


def shipped_configs() -> dict[str, Path]:
    """Configs that ship with the package, by name (``shapes`` -> ``configs/shapes.toml``)."""
    root = resources.files("tg_synth") / "configs"
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise ConfigError(
        f"{name_or_path}: no such config file, and not a shipped config name (shipped: {sorted(shipped)})"
    )


def load_config(name_or_path: str, overrides: list[str] | None = None) -> SynthConfig:
    path = resolve_config_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return config_from_dict(data, str(path), overrides)
