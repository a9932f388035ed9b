"""The shapes world: a deterministic generator of coloured-shape scenes and their grounding tasks.

It stands in for COCO + a detector + an LLM on a machine without weights or network.
"""

from tg_data.shapes.dataset import SPLITS, load_scenes, read_manifest, split_scenes, write_shapes_dataset
from tg_data.shapes.language import Expr, candidate_expressions, choose_expression, denote, is_unambiguous
from tg_data.shapes.pope import POPE_CATEGORIES, pope_samples
from tg_data.shapes.render import render_scene
from tg_data.shapes.scene import (
    COLOURS,
    KINDS,
    RELATIONS,
    Scene,
    Shape,
    ShapesConfig,
    generate_scene,
    relations,
)
from tg_data.shapes.tasks import REC_PROMPT, TaskMix, scene_samples

__all__ = [
    "COLOURS",
    "KINDS",
    "POPE_CATEGORIES",
    "REC_PROMPT",
    "RELATIONS",
    "SPLITS",
    "Expr",
    "Scene",
    "Shape",
    "ShapesConfig",
    "TaskMix",
    "candidate_expressions",
    "choose_expression",
    "denote",
    "generate_scene",
    "is_unambiguous",
    "load_scenes",
    "pope_samples",
    "read_manifest",
    "relations",
    "render_scene",
    "scene_samples",
    "split_scenes",
    "write_shapes_dataset",
]
