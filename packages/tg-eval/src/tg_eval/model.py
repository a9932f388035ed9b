"""Running a model for a benchmark: tg-infer's batched predictor behind tg-eval's ``Predictor`` seam.

tg-infer (and with it torch) is imported only when a model is loaded, so ``pip install tg-eval``
without the ``model`` extra still scores prediction files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tg_eval.errors import EvalError
from tg_eval.predictor import GenerationRequest

INSTALL_HINT = "running a model needs tg-infer: install tg-eval with its model extra (pip install 'tg-eval[model]')"


class ModelPredictor:
    """Answers ``GenerationRequest``s with a ``tg_infer.Predictor``: batched, greedy, left-padded."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    @classmethod
    def load(
        cls,
        model: str | Path,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        threads: int | None = None,
    ) -> ModelPredictor:
        try:
            import torch

            from tg_infer.errors import InferError
            from tg_infer.predictor import Predictor
        except ImportError:
            raise EvalError(INSTALL_HINT) from None
        if threads is not None:
            if threads < 1:
                raise EvalError(f"--threads must be at least 1, got {threads}")
            torch.set_num_threads(threads)
        try:
            return cls(Predictor.load(model, device=device, dtype=dtype, max_batch_size=batch_size))
        except InferError as e:
            raise EvalError(str(e)) from None

    @property
    def name(self) -> str:
        return self.predictor.name

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[str]:
        from tg_infer.errors import InferError
        from tg_infer.requests import Request

        try:
            asks = [Request.ask(r.prompt, r.image, r.objects, max_new_tokens=r.max_new_tokens, id=r.id)
                    for r in requests]
            return self.predictor.generate_batch(asks)
        except InferError as e:
            ids = ", ".join(r.id for r in requests[:5]) + (" ..." if len(requests) > 5 else "")
            raise EvalError(f"cannot answer request(s) {ids}: {e}") from None
