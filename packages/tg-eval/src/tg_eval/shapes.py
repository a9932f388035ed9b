"""The shapes world's held-out split as a benchmark: REC, POPE and description assessment.

A directory written by ``tg_data.shapes.write_shapes_dataset`` holds ``<split>.parquet`` with
``rec`` samples (target = ``objects[0]``), ``pope`` samples (``meta`` category/label/object) and
``grounded_desc`` samples; image paths are relative to the directory.
"""

from __future__ import annotations

from pathlib import Path

from tg_data.io import read_parquet
from tg_data.schema import Sample, Task
from tg_eval.errors import EvalError
from tg_eval.predictor import GenerationRequest

DEFAULT_SPLIT = "test"
#: Tokens a REC answer needs: one coordinate text is about 25 tokens; generous for chatty models.
REC_MAX_NEW_TOKENS = 48
POPE_MAX_NEW_TOKENS = 16
DESCRIBE_MAX_NEW_TOKENS = 512


def shapes_samples(root: str | Path, split: str = DEFAULT_SPLIT, task: str | None = None) -> list[Sample]:
    """The split's samples (of one task when given)."""
    path = Path(root) / f"{split}.parquet"
    if not path.is_file():
        raise EvalError(
            f"{root}: no {split}.parquet here; write a shapes dataset first "
            f"(tg_data.shapes.write_shapes_dataset or `tg-data shapes --out {root}`)"
        )
    samples = [s for s in read_parquet(str(path)) if task is None or s.task == task]
    if task is not None and not samples:
        raise EvalError(f"{path}: holds no {task!r} samples")
    return samples


def shapes_requests(root: str | Path, task: str, split: str = DEFAULT_SPLIT) -> list[GenerationRequest]:
    """Generation requests for one task of the split, images resolved against ``root``."""
    budget = {Task.REC: REC_MAX_NEW_TOKENS, Task.POPE: POPE_MAX_NEW_TOKENS, Task.GROUNDED_DESC: DESCRIBE_MAX_NEW_TOKENS}
    return [
        GenerationRequest.from_sample(s, str(root), max_new_tokens=budget.get(task, 64))
        for s in shapes_samples(root, split, task)
    ]
