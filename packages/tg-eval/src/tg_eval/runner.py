"""Generate-then-score for benchmarks a model can be run on, with any ``Predictor``.

Generation appends to the predictions file as it goes and skips ids already there, so running the
same command again after an interruption finishes the job; scoring then reads the whole file.
"""

from __future__ import annotations

from pathlib import Path

from tg_data.schema import Task
from tg_eval.errors import EvalError
from tg_eval.pope import pope_from_samples, score_pope
from tg_eval.predictions import read_predictions
from tg_eval.predictor import GenerationRequest, GenerationStats, Predictor, generate_predictions
from tg_eval.rec import rec_targets, score_rec
from tg_eval.result import EvalResult
from tg_eval.shapes import DEFAULT_SPLIT, POPE_MAX_NEW_TOKENS, REC_MAX_NEW_TOKENS, shapes_samples

SHAPES_BENCHMARKS: dict[str, str] = {"rec": Task.REC, "pope": Task.POPE}


def run_shapes(
    bench: str,
    root: str | Path,
    predictor: Predictor,
    predictions: str | Path,
    split: str = DEFAULT_SPLIT,
    batch_size: int = 8,
    progress: bool = False,
    name: str | None = None,
) -> tuple[EvalResult, GenerationStats]:
    """Answer the shapes split's ``bench`` questions with ``predictor`` (resumably), then score them."""
    if bench not in SHAPES_BENCHMARKS:
        raise EvalError(f"the shapes world offers {sorted(SHAPES_BENCHMARKS)}, not {bench!r}")
    task = SHAPES_BENCHMARKS[bench]
    samples = shapes_samples(root, split, task)
    budget = REC_MAX_NEW_TOKENS if bench == "rec" else POPE_MAX_NEW_TOKENS
    requests = [GenerationRequest.from_sample(s, str(root), max_new_tokens=budget) for s in samples]
    stats = generate_predictions(predictor, requests, predictions, batch_size, progress, description=f"shapes {bench}")
    preds = read_predictions(predictions)
    label = name or Path(predictions).stem
    if bench == "rec":
        result = score_rec(rec_targets(samples, default_split=f"shapes-{split}"), preds, name=label)
    else:
        questions, labels = pope_from_samples(samples)
        result = score_pope(questions, labels, preds, name=label, fixes=None)
    result.inputs.update({"shapes": str(root), "split": split, "predictions": str(predictions)})
    return result, stats
