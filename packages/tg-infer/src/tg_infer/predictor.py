"""The Predictor: a loaded TinyGroundingGPT that answers, grounds, describes, chats and explains itself.

Requests are encoded with tg-model's own template and encoder (so inference sees exactly the token
layout training did), left-padded into batches and decoded together with the KV cache. Greedy
decoding of a batch gives the same tokens as decoding each request alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from transformers import AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase, StoppingCriteriaList

from tg_data.box import Box
from tg_data.prompts import REC_PROMPT
from tg_data.schema import ObjectRef, Role, Sample, SampleError, Show, Turn
from tg_encoders.errors import CropError, ImageInputError
from tg_infer.answers import Answer, Grounding, find_boxes
from tg_infer.decoding import RowBudgets, RowStreamer
from tg_infer.device import pick_device, pick_dtype
from tg_infer.errors import InferError, ModelLoadError
from tg_infer.images import ImageLimits, open_image
from tg_infer.requests import GREEDY, Generation, ImageInput, Request, Sampling, as_turns
from tg_model.inputs import EncodedSample, SampleEncoder, collate
from tg_model.modeling import TinyGroundingGPTForCausalLM, register_auto_classes
from tg_model.template import SampleRefused
from tg_model.tokenizer import IM_END

if TYPE_CHECKING:
    from tg_infer.attention import AttentionMap

#: The grounded description prompt of the paper's description task (and the shapes world's).
DESCRIBE_PROMPT = "Describe the image in detail. Give the coordinate of every object you mention."
REC_MAX_NEW_TOKENS = 48
DESCRIBE_MAX_NEW_TOKENS = 256


@dataclass
class Prepared:
    """A request encoded for the model, with the size of its image for pixel boxes."""

    request: Request
    encoded: EncodedSample
    image: Image.Image | None

    @property
    def prompt_tokens(self) -> int:
        return self.encoded.length


def _group(prepared: Sequence[Prepared], size: int) -> Iterator[list[int]]:
    """Indices of requests that can decode together (same sampling), in chunks of ``size``."""
    by_sampling: dict[Sampling, list[int]] = {}
    for i, p in enumerate(prepared):
        by_sampling.setdefault(p.request.sampling, []).append(i)
    for indices in by_sampling.values():
        for start in range(0, len(indices), size):
            yield indices[start : start + size]


class Predictor:
    """A model ready to answer; thread-safe (one generation at a time on the model)."""

    def __init__(
        self,
        model: TinyGroundingGPTForCausalLM,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_batch_size: int = 16,
        image_limits: ImageLimits = ImageLimits(),
        name: str = "tinygroundinggpt",
    ) -> None:
        if max_batch_size < 1:
            raise InferError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.image_limits = image_limits
        self.name = name
        self.config = model.config
        self.context_length = int(model.config.context_length)
        self.encoder = SampleEncoder(tokenizer, model.config, model.encoder.image_size, model.image_tokens)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.text_config.pad_token_id
        eos = {tokenizer.convert_tokens_to_ids(IM_END)}
        configured = model.generation_config.eos_token_id
        eos.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        self.eos_ids: set[int] = {int(e) for e in eos if e is not None}
        self._lock = threading.RLock()

    # loading ------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Any directory written by ``save_pretrained`` of a TinyGroundingGPT model and its tokenizer."""
        directory = Path(path)
        if not (directory / "config.json").is_file():
            raise ModelLoadError(
                f"{path}: not a model directory (no config.json); give a directory written by "
                "save_pretrained, e.g. the final export of tg-train"
            )
        register_auto_classes()
        chosen = pick_device(device)
        torch_dtype = pick_dtype(chosen, dtype)
        try:
            model = TinyGroundingGPTForCausalLM.from_pretrained(str(directory), dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"{path}: cannot load the model or its tokenizer ({e})") from None
        kwargs.setdefault("name", directory.resolve().name)
        return cls(model, tokenizer, device=chosen, dtype=torch_dtype, **kwargs)

    # encoding -----------------------------------------------------------------------------------
    def prepare(self, request: Request) -> Prepared:
        """Encode one request; every mistake in it is an ``InferError`` naming the request."""
        image = None if request.image is None else open_image(request.image, self.image_limits)
        rid = request.id or "request"
        turns = request.with_image_placeholder()
        objects = [o if o.show == Show.IMAGE.value else ObjectRef(o.box, Show.IMAGE.value, o.label, o.image, o.margin)
                   for o in request.objects]
        try:
            sample = Sample(
                id=rid,
                turns=list(turns),
                image="<memory>" if image is not None else None,
                objects=objects,
                width=image.width if image is not None else None,
                height=image.height if image is not None else None,
            )
            encoded = self.encoder.encode(sample, image=image, for_generation=True)
        except SampleRefused as e:
            code = "context_length_exceeded" if e.reason == "too_long" else "invalid_request"
            raise InferError(str(e), code=code) from None
        except (SampleError, CropError, ImageInputError) as e:
            raise InferError(str(e)) from None
        budget = self.context_length - encoded.length
        if request.max_new_tokens > budget:
            raise InferError(
                f"{rid}: prompt of {encoded.length} tokens plus max_new_tokens={request.max_new_tokens} exceeds the "
                f"model's context of {self.context_length} tokens; ask for at most {max(budget, 0)} new tokens",
                code="context_length_exceeded",
                param="max_tokens",
            )
        return Prepared(request, encoded, image)

    # generation ---------------------------------------------------------------------------------
    def generate(
        self,
        requests: Sequence[Request | Prepared],
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[Generation]:
        """Answer every request, decoding up to ``max_batch_size`` of them together.

        ``on_text(i, delta)`` is called with each new piece of request ``i``'s text as it is decoded.
        """
        prepared = [r if isinstance(r, Prepared) else self.prepare(r) for r in requests]
        results: list[Generation | None] = [None] * len(prepared)
        for indices in _group(prepared, self.max_batch_size):
            callback = None
            if on_text is not None:
                def callback(row: int, delta: str, _indices: list[int] = indices) -> None:
                    on_text(_indices[row], delta)
            for i, g in zip(indices, self._decode([prepared[i] for i in indices], callback), strict=True):
                results[i] = g
        return results  # type: ignore[return-value]

    def generate_batch(self, requests: Sequence[Request | Prepared]) -> list[str]:
        """Texts only: the shape tg-eval's ``Predictor`` protocol asks for."""
        return [g.text for g in self.generate(requests)]

    def _inputs(self, batch: Sequence[Prepared]) -> dict[str, Any]:
        tensors = collate([p.encoded for p in batch], self.pad_token_id, padding_side="left")
        inputs = {"input_ids": tensors["input_ids"].to(self.device),
                  "attention_mask": tensors["attention_mask"].to(self.device)}
        for key in ("pixel_values", "object_pixel_values"):
            if tensors[key] is not None:
                inputs[key] = tensors[key].to(self.device, self.dtype)
        return inputs

    def _decode(self, batch: Sequence[Prepared], on_text: Callable[[int, str], None] | None) -> list[Generation]:
        sampling = batch[0].request.sampling
        budgets = [p.request.max_new_tokens for p in batch]
        inputs = self._inputs(batch)
        prompt_length = inputs["input_ids"].shape[1]
        config = GenerationConfig(
            max_new_tokens=max(budgets),
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_token_id,
            use_cache=True,
            **sampling.generation_kwargs(),
        )
        streamer = RowStreamer(self.tokenizer, budgets, self.eos_ids, on_text) if on_text is not None else None
        with self._lock, torch.inference_mode():
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            out = self.model.generate(
                **inputs,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([RowBudgets(prompt_length, budgets)]),
                streamer=streamer,
            )
        new = out[:, prompt_length:].tolist()
        results = []
        for p, row, budget in zip(batch, new, budgets, strict=True):
            ids, reason = [], "length"
            for token in row[:budget]:
                if token in self.eos_ids:
                    reason = "stop"
                    break
                ids.append(int(token))
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            results.append(Generation(text, ids, reason, p.prompt_tokens))
        return results

    # tasks --------------------------------------------------------------------------------------
    def ground(self, image: ImageInput, expression: str, max_new_tokens: int = REC_MAX_NEW_TOKENS) -> Grounding:
        """Where ``expression`` is: the answer to the paper's REC prompt, as pixels and as coordinate text."""
        if not expression or not expression.strip():
            raise InferError("the referring expression is empty; say which object to find")
        pil = open_image(image, self.image_limits)
        request = Request.ask(REC_PROMPT.format(expression=expression.strip()), pil, max_new_tokens=max_new_tokens)
        text = self.generate([request])[0].text
        boxes = find_boxes(text, pil.width, pil.height, expression)
        first = boxes[0] if boxes else None
        return Grounding(
            expression=expression,
            answer=text,
            box=first.pixels if first else None,
            coords=first.coords if first else None,
            normalized=first.box if first else None,
            width=pil.width,
            height=pil.height,
        )

    def describe(self, image: ImageInput, prompt: str = DESCRIBE_PROMPT,
                 max_new_tokens: int = DESCRIBE_MAX_NEW_TOKENS, sampling: Sampling = GREEDY) -> Answer:
        """A grounded description: text with the coordinates of every object it mentions."""
        pil = open_image(image, self.image_limits)
        return self.chat([Turn(Role.USER.value, prompt)], pil, max_new_tokens=max_new_tokens, sampling=sampling)

    def chat(
        self,
        messages: Sequence[Turn | dict | tuple[str, str]],
        images: ImageInput | Sequence[ImageInput] | None = None,
        objects: Sequence[ObjectRef | Box] = (),
        max_new_tokens: int = 256,
        sampling: Sampling = GREEDY,
    ) -> Answer:
        """Continue a conversation.

        ``images``: the conversation's image (one; the model reads one image per conversation).
        ``objects``: one per ``<object>`` placeholder, in order: a ``Box`` (normalised, cut from the
        image) or an ``ObjectRef`` whose ``image`` names another picture to cut from.
        Coordinates in the messages are the model's normalised coordinate text.
        """
        if isinstance(images, (list, tuple)):
            if len(images) > 1:
                raise InferError(f"the model reads one image per conversation, got {len(images)}")
            images = images[0] if images else None
        pil = None if images is None else open_image(images, self.image_limits)  # type: ignore[arg-type]
        refs = tuple(o if isinstance(o, ObjectRef) else ObjectRef(o, Show.IMAGE.value) for o in objects)
        request = Request(as_turns(messages), pil, refs, max_new_tokens=max_new_tokens, sampling=sampling)
        g = self.generate([request])[0]
        boxes = find_boxes(g.text, pil.width, pil.height) if pil is not None else []
        return Answer(g.text, boxes, g.finish_reason)

    # attention ----------------------------------------------------------------------------------
    @contextmanager
    def eager_attention(self) -> Iterator[None]:
        """Eager attention for the duration (fused kernels do not return attention weights)."""
        with self._lock:
            before = self.model.config._attn_implementation
            if before != "eager":
                self.model.set_attn_implementation("eager")
            try:
                yield
            finally:
                if before != "eager":
                    self.model.set_attn_implementation(before)

    def attention(self, image: ImageInput, prompt: str, answer: str | None = None, rows: str = "answer",
                  objects: Sequence[ObjectRef | Box] = (), max_new_tokens: int = 128) -> AttentionMap:
        """Where the model looked: see ``tg_infer.attention.attention_map``."""
        from tg_infer.attention import attention_map

        return attention_map(self, image, prompt, answer=answer, rows=rows, objects=objects,
                             max_new_tokens=max_new_tokens)
