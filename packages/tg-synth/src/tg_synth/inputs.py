"""The images a run works on: a shapes-world split, or an image list / glob with optional annotations.

Image list format (JSON Lines, one image per line)::

    {"id": "coco-139", "image": "val2017/000000000139.jpg", "width": 640, "height": 426,
     "annotations": [{"label": "person", "box": [412.8, 157.6, 465.9, 295.6]}],
     "box_format": "xyxy"}

``image`` is relative to ``[input] root``; ``width`` / ``height`` are read from the file when absent.
``box_format`` says how annotation boxes are written: ``padded`` (the project frame, fractions of the
padded square; the default), ``xyxy`` or ``xywh`` (pixels of the original image, COCO/RefCOCO/VG).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tg_data.box import Box, BoxError
from tg_data.io import DataError
from tg_data.shapes import load_scenes, read_manifest, write_shapes_dataset
from tg_data.shapes.dataset import image_path
from tg_data.shapes.scene import Scene
from tg_synth.config import ConfigError, InputConfig
from tg_synth.records import Annotation, ImageItem

BOX_FORMATS = ("padded", "xyxy", "xywh")


@dataclass
class Inputs:
    """The items, the root their image paths are relative to, and images that could not be listed."""

    items: list[ImageItem]
    image_root: Path
    failures: list[dict[str, str]] = field(default_factory=list)
    scenes: dict[str, Scene] | None = None  # shapes-world truth, for the oracle backends


def _shapes_dataset(cfg: InputConfig, out_dir: Path) -> Path:
    """The shapes dataset to read: the configured one, or one generated (deterministically) in OUT/shapes."""
    if cfg.shapes_root:
        root = Path(cfg.shapes_root)
        try:
            read_manifest(str(root))
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(
                f"[input] shapes_root = {cfg.shapes_root!r}: {e}; leave shapes_root empty to generate one"
            ) from None
        return root
    root = out_dir / "shapes"
    try:
        manifest = read_manifest(str(root))
        have = manifest.get("splits", {}).get(cfg.shapes_split, {}).get("scenes")
        if manifest.get("seed") == cfg.shapes_seed and have == cfg.shapes_scenes:
            return root
    except (FileNotFoundError, ValueError):
        pass
    # scene i depends only on (seed, split, i): regenerating rewrites the same files
    write_shapes_dataset(str(root), {cfg.shapes_split: cfg.shapes_scenes}, seed=cfg.shapes_seed, pope_splits=())
    return root


def shapes_inputs(cfg: InputConfig, out_dir: Path) -> Inputs:
    root = _shapes_dataset(cfg, out_dir)
    try:
        scenes = load_scenes(str(root), cfg.shapes_split)
    except FileNotFoundError:
        raise ConfigError(f"{root}: the shapes dataset has no split {cfg.shapes_split!r}") from None
    if cfg.limit:
        scenes = scenes[: cfg.limit]
    items = [ImageItem(s.id, image_path(s), s.width, s.height) for s in scenes]
    return Inputs(items, root.resolve(), scenes={s.id: s for s in scenes})


def _annotation(d: object, width: int, height: int, box_format: str, where: str) -> Annotation:
    if not isinstance(d, dict) or "label" not in d or "box" not in d:
        raise DataError(f"{where}: each annotation needs 'label' and 'box'")
    values = d["box"]
    if not isinstance(values, list) or len(values) != 4:
        raise DataError(f"{where}: annotation box must be a list of 4 numbers, got {values!r}")
    try:
        if box_format == "padded":
            box = Box.from_list(values)
        elif box_format == "xyxy":
            box = Box.from_pixels(*values, width, height, clip=True)
        else:
            box = Box.from_xywh_pixels(*values, width, height, clip=True)
    except (BoxError, TypeError) as e:
        raise DataError(f"{where}: bad annotation box {values!r} ({e})") from None
    return Annotation(" ".join(str(d["label"]).lower().split()), box, str(d.get("source") or "annotation"))


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def list_inputs(cfg: InputConfig) -> Inputs:
    root = Path(cfg.root)
    if not root.is_dir():
        raise ConfigError(f"[input] root = {cfg.root!r}: no such directory")
    rows: list[tuple[str, dict]] = []
    if cfg.image_list:
        path = Path(cfg.image_list)
        if not path.is_file():
            raise ConfigError(f"[input] image_list = {cfg.image_list!r}: no such file")
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(d, dict) or not d.get("image"):
                    raise DataError(f"{where}: each line needs at least 'image' (a path under [input] root)")
                rows.append((where, d))
    else:
        for p in sorted(root.glob(cfg.glob)):
            if p.is_file():
                rel = p.relative_to(root).as_posix()
                rows.append((str(p), {"id": rel, "image": rel}))
    if cfg.limit:
        rows = rows[: cfg.limit]
    items: list[ImageItem] = []
    failures: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    for where, d in rows:
        item_id = str(d.get("id") or d["image"])
        if item_id in seen:
            raise DataError(f"{where}: duplicate image id {item_id!r} (first at {seen[item_id]}); ids must be unique")
        seen[item_id] = where
        box_format = d.get("box_format", "padded")
        if box_format not in BOX_FORMATS:
            raise DataError(f"{where}: box_format must be one of {list(BOX_FORMATS)}, got {box_format!r}")
        file = root / d["image"]
        width, height = d.get("width"), d.get("height")
        if not file.is_file():
            failures.append({"id": item_id, "image": d["image"], "step": "load", "reason": f"image not found: {file}"})
            continue
        if width is None or height is None:
            try:
                width, height = _image_size(file)
            except OSError as e:
                failures.append({"id": item_id, "image": d["image"], "step": "load", "reason": f"unreadable image: {e}"})
                continue
        anns = tuple(
            _annotation(a, int(width), int(height), box_format, f"{where}: annotations[{k}]")
            for k, a in enumerate(d.get("annotations") or [])
        )
        items.append(ImageItem(item_id, str(d["image"]), int(width), int(height), anns))
    return Inputs(items, root.resolve(), failures)


def load_inputs(cfg: InputConfig, out_dir: Path) -> Inputs:
    return shapes_inputs(cfg, out_dir) if cfg.kind == "shapes" else list_inputs(cfg)
