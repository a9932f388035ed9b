"""Training data: sources, the mixture, lazy decoding in workers, length-grouped batches, packing.

The order of every epoch is a pure function of (seed, epoch), so a resumed run sees exactly the
batches an uninterrupted one would. Samples the model cannot take (too long, missing image) are
not dropped silently: the collator passes their reasons up and the trainer reports the counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tg_data.io import SkipReport, read_samples
from tg_data.schema import IMAGE_TOKEN, OBJECT_TOKEN, Sample, Turn
from tg_model.inputs import EncodedSample, SampleEncoder
from tg_model.template import IGNORE_INDEX, EncodedText, SampleRefused
from tg_train.recipe import DataSource, RecipeError


@dataclass
class Refused:
    id: str
    reason: str
    message: str


# sources and mixture ------------------------------------------------------------------------------
def source_format(src: DataSource) -> str:
    if src.format != "auto":
        return src.format
    return "llava" if src.path.endswith(".json") else "tg"


def split_rounds(sample: Sample, where: str = "?") -> list[Sample]:
    """One sample per user/assistant round, each with the image and its round's object.

    Only for rounds that are independent questions (multi-round REC): a round that refers back
    to an earlier answer loses its context. Object images (``<object>``) cannot follow a split.
    """
    system = [t for t in sample.turns if t.role == "system"]
    turns = [t for t in sample.turns if t.role != "system"]
    rounds = len(turns) // 2
    if rounds <= 1:
        return [sample]
    pairs = [(turns[2 * i], turns[2 * i + 1]) for i in range(rounds)]
    if len(turns) % 2 or any(u.role != "user" or a.role != "assistant" for u, a in pairs):
        raise RecipeError(
            f"{where}: sample {sample.id!r}: split_rounds needs user/assistant pairs, got roles "
            f"{[t.role for t in turns]}; turn split_rounds off for this source"
        )
    object_images = any(OBJECT_TOKEN in t.text for t in turns)
    if object_images or len(sample.objects) not in (0, rounds):
        raise RecipeError(
            f"{where}: sample {sample.id!r} has {rounds} rounds, {len(sample.objects)} object(s) and "
            f"{'object images' if object_images else 'no object images'}; "
            "split_rounds needs one coordinate object per round (or none) and no object images: keep "
            "split_rounds for REC-style sources (tasks = [\"rec\"])"
        )
    out = []
    for i, (user, answer) in enumerate(pairs):
        text = user.text
        if sample.image is not None and IMAGE_TOKEN not in text:
            text = f"{IMAGE_TOKEN}\n{text}"
        objects = [sample.objects[i]] if sample.objects else []
        out.append(replace(sample, id=f"{sample.id}#{i}", turns=[*system, Turn(user.role, text), answer], objects=objects))
    return out


def read_source(src: DataSource, skip: SkipReport | None = None) -> list[Sample]:
    """All samples of one source, filtered by task and capped by ``max_samples``."""
    fmt = source_format(src)
    tasks = set(src.tasks)
    if fmt == "llava":
        from tg_data.readers.llava import read_llava

        samples: Iterator[Sample] = (s for s in read_llava(src.path, skip=skip) if not tasks or s.task in tasks)
    else:
        samples = read_samples(src.path, skip=skip, tasks=tasks or None)  # filtered by the reader
    out = [s for s in samples if not src.max_objects or len(s.objects) <= src.max_objects]
    if src.split_rounds:
        out = [one for s in out for one in split_rounds(s, src.path)]
    if src.max_samples:
        out = out[: src.max_samples]
    if not out:
        which = [f"of tasks {sorted(tasks)}"] if tasks else []
        which += [f"with at most {src.max_objects} object(s)"] if src.max_objects else []
        raise RecipeError(f"data source {src.path!r} yields no samples" + (" " + " and ".join(which) if which else ""))
    return out


def image_root(src: DataSource) -> str:
    if src.image_root:
        return src.image_root
    p = src.path.rstrip("/")
    return str(Path(p).parent) if "://" not in p else p.rsplit("/", 1)[0]


def mixture_counts(sizes: Sequence[int], sources: Sequence[DataSource]) -> list[int]:
    """How many draws each source contributes to one epoch of the mixture.

    ``epochs = e``: e passes over the source. ``weight = w``: a w / sum(weights) share of all the
    weighted sources' rows together. Neither: one pass.
    """
    weighted_total = sum(n for n, s in zip(sizes, sources, strict=True) if s.weight > 0)
    weight_sum = sum(s.weight for s in sources if s.weight > 0)
    out = []
    for n, s in zip(sizes, sources, strict=True):
        if s.epochs > 0:
            out.append(max(1, round(s.epochs * n)))
        elif s.weight > 0:
            out.append(max(1, round(s.weight / weight_sum * weighted_total)))
        else:
            out.append(n)
    return out


def mixture_indices(sizes: Sequence[int], counts: Sequence[int], seed: int) -> list[tuple[int, int]]:
    """(source, row) draws: whole passes over a source, then a seeded subset for the remainder."""
    rng = np.random.default_rng([seed, 17])
    out: list[tuple[int, int]] = []
    for src, (n, count) in enumerate(zip(sizes, counts, strict=True)):
        full, rest = divmod(count, n)
        rows = list(range(n)) * full
        if rest:
            rows += sorted(int(i) for i in rng.choice(n, size=rest, replace=False))
        out += [(src, r) for r in rows]
    return out


# dataset ------------------------------------------------------------------------------------------
class MixtureDataset(Dataset):
    """Index -> encoded sample; decoding images happens here, i.e. in DataLoader workers."""

    def __init__(self, samples: Sequence[Sample], roots: Sequence[str], encoders: dict[str, SampleEncoder]):
        self.samples = samples
        self.roots = roots
        self.encoders = encoders
        # each sample's tokens, kept after its first read: later epochs skip the template and
        # tokenizer, half of what a step spends on data once the pixel caches answer. Kept in the
        # process that reads (num_workers = 0); DataLoader workers start afresh every epoch.
        self.texts: dict[int, EncodedText] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> EncodedSample | Refused:
        sample = self.samples[index]
        encoder = self.encoders[self.roots[index]]
        try:
            text = self.texts.get(index)
            if text is None:
                text = self.texts[index] = encoder.encode_text(sample)
            return encoder.encode(sample, text=text)
        except SampleRefused as e:
            return Refused(sample.id, e.reason, str(e))


def estimate_length(sample: Sample, image_tokens: int, object_tokens: int) -> int:
    """Token count estimate (text chars / 3.5 plus media rows), as LLaVA groups by length."""
    n = 0
    for t in sample.turns:
        n += 8 + int(len(t.text) / 3.5)
        n += t.text.count(IMAGE_TOKEN) * image_tokens + t.text.count(OBJECT_TOKEN) * object_tokens
    return n


# batching -----------------------------------------------------------------------------------------
def plan_epoch(
    lengths: Sequence[int],
    multimodal: Sequence[bool],
    micro: int,
    micro_batches_per_step: int,
    seed: int,
    epoch: int,
    group_by_length: bool,
) -> list[list[int]]:
    """The epoch's micro-batches in global order (micro-batch k goes to rank k % world).

    With grouping, as LLaVA's modality-length sampler: shuffle, cut into mega-batches of one
    optimiser step, sort each by length, so a micro-batch holds samples of similar length and one
    modality. Each modality's short tail mega-batch goes last (as LLaVA's leftover batch does), so
    only the final step can mix modalities. The last step is completed by wrapping around to the
    epoch's start.
    """
    rng = np.random.default_rng([seed, epoch, 31])
    n = len(lengths)
    order = rng.permutation(n)
    step = micro * micro_batches_per_step
    if group_by_length:
        mm = [int(i) for i in order if multimodal[i]]
        text = [int(i) for i in order if not multimodal[i]]
        megas: list[list[int]] = []
        tails: list[int] = []
        for group in (mm, text):
            for k in range(0, len(group), step):
                mega = sorted(group[k : k + step], key=lambda i: -lengths[i])
                if len(mega) == step:
                    megas.append(mega)
                else:  # a short mega-batch inside the order would shift every later batch's boundary
                    tails += mega
        mega_order = rng.permutation(len(megas))
        flat = [i for m in mega_order for i in megas[m]]
        flat += sorted(tails, key=lambda i: -lengths[i])
    else:
        flat = [int(i) for i in order]
    total = math.ceil(len(flat) / step) * step
    flat += flat[: total - len(flat)] if total > len(flat) else []
    while len(flat) < total:  # tiny datasets: wrap as often as needed
        flat += flat[: total - len(flat)]
    return [flat[k : k + micro] for k in range(0, total, micro)]


class RankBatchSampler(Sampler[list[int]]):
    """This rank's micro-batches of a planned epoch, from a resume position on."""

    def __init__(self, plan: list[list[int]], rank: int, world: int, start: int = 0) -> None:
        self.batches = plan[rank::world][start:]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def pack_rows(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """First-fit decreasing: positions of samples grouped into rows of at most ``max_length``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_length - lengths[i])
    return [sorted(r) for r in rows]


@dataclass
class Collator:
    """Pads (or packs) a micro-batch; refused samples are passed on by reason, not lost."""

    pad_token_id: int
    packing: bool = False
    max_length: int = 2048
    refused_reasons: Counter[str] = field(default_factory=Counter)

    def __call__(self, items: Sequence[EncodedSample | Refused]) -> dict:
        good = [s for s in items if isinstance(s, EncodedSample)]
        refused = [s for s in items if isinstance(s, Refused)]
        batch = self.pack(good) if self.packing else self.pad(good)
        batch["refused"] = [(r.id, r.reason, r.message) for r in refused]
        batch["n_samples"] = len(good)
        return batch

    def _media(self, rows: list[list[EncodedSample]]) -> dict:
        images = [s.pixel_values for row in rows for s in row if s.pixel_values is not None]
        objects = [s.object_pixel_values for row in rows for s in row if s.object_pixel_values is not None]
        counts = [
            [
                sum(s.pixel_values is not None for s in row),
                sum(0 if s.object_pixel_values is None else s.object_pixel_values.shape[0] for s in row),
            ]
            for row in rows
        ]
        return {
            "pixel_values": torch.stack(images) if images else None,
            "object_pixel_values": torch.cat(objects) if objects else None,
            "media_counts": torch.tensor(counts, dtype=torch.long).reshape(len(rows), 2),
            "sample_ids": [",".join(s.id for s in row) for row in rows],
        }

    def pad(self, samples: list[EncodedSample]) -> dict:
        """Right padding. Causal attention never looks right, so real tokens never see the padding
        and no attention mask is needed: attention takes its fast causal path."""
        if not samples:
            return {"input_ids": None, "n_tokens": 0}
        length = max(s.length for s in samples)
        n = len(samples)
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
        for r, s in enumerate(samples):
            input_ids[r, : s.length] = s.input_ids
            labels[r, : s.length] = s.labels
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": None,
            "position_ids": None,
            "n_tokens": sum(s.length for s in samples),
            **self._media([[s] for s in samples]),
        }

    def pack(self, samples: list[EncodedSample]) -> dict:
        """Several samples per row; position ids restart at each sample so no attention crosses them.

        Rows are no longer than the micro-batch's longest sample: attention over a row costs its
        length squared whatever the block mask hides (SDPA computes the dense mask), so longer rows
        would trade padding for wasted attention. Capped this way a packed batch has the padded
        batch's width and fewer rows: never more work or memory than padding.
        """
        if not samples:
            return {"input_ids": None, "n_tokens": 0}
        lengths = [s.length for s in samples]
        cap = min(self.max_length, max(lengths))
        rows = [[samples[i] for i in row] for row in pack_rows(lengths, cap)]
        length = max(sum(s.length for s in row) for row in rows)
        n = len(rows)
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((n, length), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for s in row:
                input_ids[r, at : at + s.length] = s.input_ids
                labels[r, at : at + s.length] = s.labels
                position_ids[r, at : at + s.length] = torch.arange(s.length)
                at += s.length
            # the padding tail is its own "sequence" (positions restart), masked out of the loss
            position_ids[r, at:] = torch.arange(length - at)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": None,
            "position_ids": position_ids,
            "n_tokens": sum(s.length for s in samples),
            **self._media(rows),
        }
