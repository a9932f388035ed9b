"""GroundingDINO through ``transformers``: open-vocabulary boxes for the objects step 1 listed.

The model and processor load with ``AutoModelForZeroShotObjectDetection`` / ``AutoProcessor`` from a
hub name or a local directory. Labels are queried as one "a. b. c." prompt per image (split into
chunks of ``max_labels_per_query`` so long lists fit the text encoder) and several such queries run
as one batch. Each kept box is assigned the label whose tokens score highest for it; boxes under the
box threshold, or whose best label scores under the text threshold, are not returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tg_data.box import Box, BoxError
from tg_synth.backends.base import DetectRequest
from tg_synth.config import ConfigError, DetectorConfig
from tg_synth.records import Detection


def merged_prompt(labels: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``["red car", "dog"]`` -> ``"red car. dog."`` and each label's character span in it."""
    parts, spans, pos = [], [], 0
    for label in labels:
        text = " ".join(label.lower().replace(".", " ").split())
        spans.append((pos, pos + len(text)))
        parts.append(text + ".")
        pos += len(text) + 2  # the "." and the joining space
    return " ".join(parts), spans


def label_token_positions(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """For each label span, the token positions whose characters fall inside it (special tokens excluded)."""
    out: list[list[int]] = []
    for start, end in spans:
        out.append([t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end])
    return out


class GroundingDinoDetector:
    """``Detector`` backed by a transformers zero-shot detection model (GroundingDINO)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        try:
            import torch
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
        except ImportError:
            raise ConfigError(
                "the grounding_dino detector needs torch and transformers: install tg-synth[detector]"
            ) from None
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        self.torch = torch
        local = Path(cfg.model).expanduser().is_dir()
        if not local and cfg.model.startswith(("/", "./", "../", "~")):
            raise ConfigError(f"[backends.detector] model = {cfg.model!r}: no such directory")
        try:
            source = str(Path(cfg.model).expanduser()) if local else cfg.model
            self.processor = AutoProcessor.from_pretrained(source, local_files_only=local)
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(source, local_files_only=local)
        except OSError as e:
            raise ConfigError(
                f"[backends.detector] model = {cfg.model!r}: cannot load it ({e}); give a local directory "
                "or a hub name that is downloadable or already in the hub cache"
            ) from None
        self.model.eval().to(cfg.device)
        self.name = f"grounding-dino:{cfg.model}:box={cfg.box_threshold}:text={cfg.text_threshold}:chunk={cfg.max_labels_per_query}"

    def _queries(self, requests: Sequence[DetectRequest]) -> list[tuple[int, list[str]]]:
        n = self.cfg.max_labels_per_query
        out = []
        for k, r in enumerate(requests):
            labels = list(r.labels)
            for start in range(0, len(labels), n):
                out.append((k, labels[start : start + n]))
        return out

    def detect(self, requests: Sequence[DetectRequest]) -> list[list[Detection]]:
        from PIL import Image

        results: list[list[Detection]] = [[] for _ in requests]
        images: dict[int, Any] = {}
        queries = self._queries(requests)
        for start in range(0, len(queries), self.batch_size):
            batch = queries[start : start + self.batch_size]
            pics = []
            for k, _ in batch:
                if k not in images:
                    with Image.open(requests[k].path) as im:
                        images[k] = im.convert("RGB")
                pics.append(images[k])
            for (k, _labels), dets in zip(batch, self._run(pics, requests, batch), strict=True):
                results[k].extend(dets)
        return results

    def _run(
        self, pics: list[Any], requests: Sequence[DetectRequest], batch: list[tuple[int, list[str]]]
    ) -> list[list[Detection]]:
        torch = self.torch
        label_lists = [labels for _, labels in batch]
        prompts = [merged_prompt(labels) for labels in label_lists]
        inputs = self.processor(images=pics, text=[p for p, _ in prompts], return_tensors="pt", padding=True)
        inputs = {k: v.to(self.cfg.device) for k, v in inputs.items()}
        with torch.no_grad():
            outputs = self.model(**inputs)
        sizes = [(requests[k].height, requests[k].width) for k, _ in batch]
        processed = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.cfg.box_threshold,
            text_threshold=self.cfg.text_threshold,
            target_sizes=sizes,
        )
        probs = outputs.logits.sigmoid().float().cpu()  # (batch, queries, text positions)
        out: list[list[Detection]] = []
        for b, ((text, spans), labels) in enumerate(zip(prompts, label_lists, strict=True)):
            offsets = self.processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
            positions = label_token_positions(offsets, spans)
            # the same selection the processor made: queries whose best token beats the box threshold
            keep = (probs[b].max(dim=-1).values > self.cfg.box_threshold).nonzero(as_tuple=True)[0]
            boxes = processed[b]["boxes"].float().cpu()
            scores = processed[b]["scores"].float().cpu()
            h, w = sizes[b]
            dets: list[Detection] = []
            for q, box, score in zip(keep.tolist(), boxes.tolist(), scores.tolist(), strict=True):
                label_scores = [max((float(probs[b, q, t]) for t in pos), default=0.0) for pos in positions]
                best = max(range(len(labels)), key=lambda i: label_scores[i])
                if label_scores[best] <= self.cfg.text_threshold:
                    continue
                try:
                    norm = Box.from_pixels(*box, w, h, clip=True)
                except BoxError:
                    continue  # a box that clipping makes empty: nothing on the image
                dets.append(Detection(labels[best], norm, float(score)))
            out.append(dets)
        return out
