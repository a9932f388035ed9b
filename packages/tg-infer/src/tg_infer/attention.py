"""Attention maps (paper Sec. 5.2): where the model looked while writing part of its answer.

The last LLM layer's attention from chosen rows (the answer's text tokens, its coordinate tokens,
or the rows of object images) to the image-patch rows is summed over heads and rows and
normalised to sum to 1: a grid over the padded square image, laid over the picture as a heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from tg_data.box import Box, PadGeometry
from tg_data.coords import parse_boxes
from tg_data.schema import ObjectRef, Show
from tg_infer.errors import InferError
from tg_infer.images import open_image
from tg_infer.requests import ImageInput, Request

if TYPE_CHECKING:
    from tg_infer.predictor import Predictor

#: Which query rows an attention map is taken from.
ROW_KINDS: tuple[str, ...] = ("answer", "text", "coords", "objects")


@dataclass
class AttentionMap:
    grid: np.ndarray  # (g, g) over the padded square, row-major from the top left; sums to 1
    answer: str
    rows: list[int]  # sequence positions the attention is taken from
    tokens: list[str]  # the tokens at those positions
    kind: str
    image: Image.Image = field(repr=False)

    def overlay(self, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
        return overlay_heatmap(self.image, self.grid, alpha, colormap)

    def save(self, path: str, alpha: float = 0.5) -> None:
        self.overlay(alpha).save(path, format="PNG")

    @property
    def peak(self) -> tuple[int, int]:
        """(row, column) of the patch with the most attention."""
        r, c = np.unravel_index(int(np.argmax(self.grid)), self.grid.shape)
        return int(r), int(c)


def patch_attention(attention: torch.Tensor, rows: Sequence[int], patch_positions: Sequence[int]) -> np.ndarray:
    """Sum ``attention`` (heads, queries, keys) over heads and the query ``rows``, at the keys
    ``patch_positions``; normalised to sum to 1."""
    if attention.ndim != 3:
        raise ValueError(f"expected attention of shape (heads, queries, keys), got {tuple(attention.shape)}")
    if not rows:
        raise InferError("no rows selected to take attention from")
    rows_t = torch.as_tensor(list(rows), dtype=torch.long, device=attention.device)
    cols_t = torch.as_tensor(list(patch_positions), dtype=torch.long, device=attention.device)
    mass = attention.float().index_select(1, rows_t).index_select(2, cols_t).sum(dim=(0, 1))
    total = float(mass.sum())
    if not total > 0:
        raise InferError("the chosen rows put no attention on the image (do they come before it?)")
    return (mass / total).cpu().numpy().astype(np.float64)


def token_spans(tokenizer, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it."""
    spans = []
    previous = ""
    for k in range(len(ids)):
        text = tokenizer.decode(list(ids[: k + 1]), skip_special_tokens=True)
        start = len(previous) if text.startswith(previous) else min(len(previous), len(text))
        spans.append((start, len(text)))
        previous = text
    return previous, spans


def select_rows(
    kind: str,
    input_ids: Sequence[int],
    answer_start: int,
    answer_text: str,
    spans: Sequence[tuple[int, int]],
    object_token_id: int,
) -> list[int]:
    """Sequence positions of the ``kind`` rows: every answer token, its visible text outside coordinates,
    its coordinate tokens, or the rows of object images."""
    if kind not in ROW_KINDS:
        raise InferError(f"unknown rows {kind!r}; choose one of {list(ROW_KINDS)}")
    if kind == "objects":
        rows = [i for i, t in enumerate(input_ids) if t == object_token_id]
        if not rows:
            raise InferError("there is no object image in the conversation to take attention from")
        return rows
    boxes = parse_boxes(answer_text).spans
    in_box = [any(s < e2 and s2 < e for s2, e2 in boxes) for s, e in spans]
    visible = [e > s and answer_text[s:e].strip() != "" for s, e in spans]
    if kind == "answer":
        keep = [True] * len(spans)
    elif kind == "coords":
        keep = in_box
    else:
        keep = [v and not b for v, b in zip(visible, in_box, strict=True)]
    rows = [answer_start + k for k, ok in enumerate(keep) if ok]
    if not rows:
        what = {"answer": "tokens", "coords": "coordinates", "text": "text outside coordinates"}[kind]
        raise InferError(f"the answer {answer_text!r} has no {what} to take attention from")
    return rows


def attention_map(
    predictor: Predictor,
    image: ImageInput,
    prompt: str,
    answer: str | None = None,
    rows: str = "answer",
    objects: Sequence[ObjectRef | Box] = (),
    max_new_tokens: int = 128,
) -> AttentionMap:
    """The map for ``prompt`` about ``image``: for the given ``answer``, or the model's own (greedy)."""
    if rows not in ROW_KINDS:
        raise InferError(f"unknown rows {rows!r}; choose one of {list(ROW_KINDS)}")
    pil = open_image(image, predictor.image_limits)
    refs = tuple(o if isinstance(o, ObjectRef) else ObjectRef(o, Show.IMAGE.value) for o in objects)
    prepared = predictor.prepare(Request.ask(prompt, pil, refs, max_new_tokens=max_new_tokens))
    if answer is None:
        answer_ids = predictor.generate([prepared])[0].token_ids
    else:
        answer_ids = predictor.tokenizer(answer, add_special_tokens=False)["input_ids"]
    answer_text, spans = token_spans(predictor.tokenizer, answer_ids)
    prompt_ids = prepared.encoded.input_ids.tolist()
    input_ids = prompt_ids + list(answer_ids)
    config = predictor.config
    query_rows = select_rows(rows, input_ids, len(prompt_ids), answer_text, spans, config.object_token_id)
    patches = [i for i, t in enumerate(input_ids) if t == config.image_token_id]
    grid = predictor.model.token_grid  # the image tokens' grid (the patch grid after any spatial merge)
    if len(patches) != grid * grid:
        raise InferError(f"expected {grid * grid} image patch rows, found {len(patches)}")
    ids = torch.tensor([input_ids], dtype=torch.long, device=predictor.device)
    pixels = prepared.encoded.pixel_values.unsqueeze(0).to(predictor.device, predictor.dtype)
    objects_px = prepared.encoded.object_pixel_values
    with predictor.eager_attention(), torch.inference_mode():
        out = predictor.model(
            input_ids=ids,
            pixel_values=pixels,
            object_pixel_values=None if objects_px is None else objects_px.to(predictor.device, predictor.dtype),
            output_attentions=True,
            use_cache=False,
            logits_to_keep=1,
        )
    last = out.attentions[-1][0]  # (heads, L, L)
    weights = patch_attention(last, query_rows, patches).reshape(grid, grid)
    tokens = [predictor.tokenizer.decode([input_ids[r]]) for r in query_rows]
    return AttentionMap(weights, answer_text, query_rows, tokens, rows, pil)


def overlay_heatmap(image: Image.Image, grid: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """``grid`` (over the padded square) stretched onto ``image`` as a coloured heatmap."""
    from matplotlib import colormaps

    if not 0 <= alpha <= 1:
        raise InferError(f"alpha must be in [0, 1], got {alpha}")
    rgb = image.convert("RGB")
    g = PadGeometry(rgb.width, rgb.height)
    peak = float(grid.max())
    scaled = (grid / peak if peak > 0 else grid).astype(np.float32)
    square = Image.fromarray(scaled).resize((g.side, g.side), Image.Resampling.BILINEAR)
    left, top = round(g.offset_x), round(g.offset_y)
    heat = np.asarray(square.crop((left, top, left + rgb.width, top + rgb.height)), dtype=np.float32)
    coloured = (colormaps[colormap](np.clip(heat, 0, 1))[..., :3] * 255).astype(np.uint8)
    return Image.blend(rgb, Image.fromarray(coloured), alpha)
