"""One training stage, as a plain function: recipe in, trained export out.

Runs as one process or one rank of many (``deepspeed --num_gpus N``); DeepSpeed ZeRO does the
optimiser state partitioning, gradient accumulation and clipping.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from tg_model.inputs import SampleEncoder
from tg_model.modeling import TinyGroundingGPTForCausalLM, register_auto_classes
from tg_model.presets import build_model
from tg_train.checkpoint import (
    TrainerState,
    complete_checkpoints,
    find_resume,
    load_checkpoint,
    save_checkpoint,
)
from tg_train.data import (
    Collator,
    MixtureDataset,
    RankBatchSampler,
    estimate_length,
    image_root,
    mixture_counts,
    mixture_indices,
    plan_epoch,
    read_source,
)
from tg_train.engine import DistInfo, create_engine, gradient_accumulation, init_distributed, use_bf16
from tg_train.metrics import MetricsLogger, plot_loss_curve, read_metrics
from tg_train.recipe import ModelSection, Recipe, RecipeError, TrainSection


@dataclass
class TrainResult:
    export_dir: Path
    global_step: int
    final_loss: float
    refused: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    trainable: dict[str, int] = field(default_factory=dict)


def load_model(section: ModelSection, seed: int) -> tuple[TinyGroundingGPTForCausalLM, Any]:
    """A preset (fresh) or a previous stage's export."""
    register_auto_classes()
    if section.init:
        from transformers import AutoTokenizer

        model = TinyGroundingGPTForCausalLM.from_pretrained(section.init, attn_implementation=section.attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(section.init)
    else:
        weights = {i: p for i, p in enumerate(section.encoder_weights) if p}
        model, tokenizer = build_model(
            section.preset, llm=section.llm or None, encoder_weights=weights, seed=seed, **section.overrides
        )
        model.language_model.set_attn_implementation(section.attn_implementation)
    if section.gradient_checkpointing:
        llm = model.language_model
        # transformers 5 renamed it; the old name is deprecated
        enable = getattr(llm, "activation_checkpointing_enable", None) or llm.gradient_checkpointing_enable
        enable()
    return model, tokenizer


def compile_decoder(model: TinyGroundingGPTForCausalLM) -> str:
    """``torch.compile`` the LLM's decoder in place (names, checkpoints and exports stay as they are).

    Inductor builds its kernels with a C++ compiler; without one the decoder stays eager and the
    returned line says so (the run is slower, not wrong).
    """
    compiler = os.environ.get("CXX") or next(filter(None, map(shutil.which, ("g++", "c++", "clang++"))), None)
    if not compiler:
        return "model.compile: no C++ compiler found (g++, c++, clang++ or $CXX); the decoder runs eagerly"
    model.language_model.get_decoder().compile(dynamic=True)
    return f"model.compile: the decoder is compiled on its first steps ({Path(compiler).name})"


def apply_freezing(model: TinyGroundingGPTForCausalLM, train: TrainSection) -> dict[str, int]:
    """Encoders frozen always; projector and LLM as the stage says. Returns trainable counts."""
    model.encoder.requires_grad_(train.encoder)
    model.projector.requires_grad_(train.projector)
    model.language_model.requires_grad_(train.llm)
    return {
        name: sum(p.numel() for p in module.parameters() if p.requires_grad)
        for name, module in (("encoder", model.encoder), ("projector", model.projector), ("llm", model.language_model))
    }


def training_inputs(batch: dict[str, Any], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """A collated batch as the model's forward arguments, on ``device``.

    ``use_cache=False`` matters beyond memory: with a KV cache, transformers' mask builder does not
    look for packed rows in ``position_ids``, and packed samples would attend to each other.
    """
    out: dict[str, Any] = {"use_cache": False}
    for key in ("input_ids", "labels", "attention_mask", "position_ids", "media_counts"):
        if batch.get(key) is not None:
            out[key] = batch[key].to(device)
    for key in ("pixel_values", "object_pixel_values"):
        if batch.get(key) is not None:
            out[key] = batch[key].to(device, dtype)
    out["sample_ids"] = batch.get("sample_ids")
    out["supervised_logits_only"] = True  # the trainer reads the loss only
    return out


def _micro_step(engine: Any, batch: dict[str, Any], device: torch.device, dtype: torch.dtype, pad_id: int) -> tuple[float, int]:
    """Forward + backward of one micro-batch; returns (loss, real tokens)."""
    if batch["input_ids"] is None or not bool((batch["labels"] != -100).any()):
        # every sample refused (or nothing supervised): keep the ranks in step with a zero-loss pass
        ids = torch.full((1, 1), pad_id, dtype=torch.long, device=device)
        loss = engine(input_ids=ids, use_cache=False).logits.sum() * 0.0
        engine.backward(loss)
        engine.step()
        return float("nan"), 0
    inputs = training_inputs(batch, device, dtype)
    loss = engine(**inputs).loss
    engine.backward(loss)
    engine.step()
    return float(loss.detach()), int(batch["n_tokens"])


def _all_mean(values: list[float], device: torch.device) -> float:
    finite = [v for v in values if math.isfinite(v)]
    t = torch.tensor([sum(finite), len(finite)], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return float(t[0] / t[1]) if t[1] > 0 else float("nan")


def _all_counts(counts: Counter[str]) -> dict[str, int]:
    """Counts summed over ranks; ranks may have seen different reasons, so the keys are gathered first."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return {k: int(v) for k, v in sorted(counts.items())}
    gathered: list[dict[str, int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, dict(counts))
    total: Counter[str] = Counter()
    for part in gathered:
        total.update(part or {})
    return {k: int(v) for k, v in sorted(total.items())}


def _all_sum(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return float(t[0])


def _add_totals(state: TrainerState, pending: list[int], device: torch.device) -> None:
    """Add this rank's samples and tokens since the last call, summed over ranks, to the state (collective)."""
    t = torch.tensor(pending, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    state.samples_seen += int(t[0])
    state.tokens_seen += int(t[1])
    pending[:] = [0, 0]


def _truncate_metrics(path: Path, last_step: int) -> None:
    records = read_metrics(path)
    kept = [r for r in records if r.get("step", 0) <= last_step]
    if len(kept) != len(records):
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def train(recipe: Recipe, dist_info: DistInfo | None = None, stage_label: str = "") -> TrainResult:
    """Run one stage; resumes from the latest complete checkpoint in ``output_dir`` by default."""
    start = time.time()
    d = dist_info or init_distributed()
    torch.manual_seed(recipe.seed + d.rank)
    out_dir = Path(recipe.output_dir)
    earlier = complete_checkpoints(out_dir)
    if recipe.checkpoint.resume == "never" and earlier:
        # keep_last would prune by step number across both runs, and a later resume pick the wrong one
        raise RecipeError(
            f"{out_dir} holds checkpoints of an earlier run ({earlier[-1].name}, ...); with checkpoint.resume = "
            "'never' they would mix with this run's: remove them or choose another output_dir"
        )
    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2))

    model, tokenizer = load_model(recipe.model, recipe.seed)
    trainable = apply_freezing(model, recipe.train)
    compiled = compile_decoder(model) if recipe.model.compile else ""

    # data ---------------------------------------------------------------------------------------
    sources = [read_source(s) for s in recipe.data]
    sizes = [len(s) for s in sources]
    draws = mixture_indices(sizes, mixture_counts(sizes, recipe.data), recipe.seed)
    samples = [sources[s][r] for s, r in draws]
    roots = [image_root(recipe.data[s]) for s, _ in draws]
    image_size, image_tokens = model.encoder.image_size, model.image_tokens
    encoders = {
        root: SampleEncoder(tokenizer, model.config, image_size, image_tokens, image_root=root,
                            max_length=recipe.batch.max_length, image_cache_mb=recipe.batch.image_cache_mb)
        for root in set(roots)
    }
    dataset = MixtureDataset(samples, roots, encoders)
    lengths = [estimate_length(s, image_tokens, model.object_tokens) for s in samples]
    multimodal = [s.image is not None for s in samples]
    accum = gradient_accumulation(recipe, d.world)
    micro_per_step = accum * d.world
    plan0 = plan_epoch(lengths, multimodal, recipe.batch.micro, micro_per_step, recipe.seed, 0, recipe.batch.group_by_length)
    steps_per_epoch = len(plan0) // micro_per_step
    total_steps = recipe.optim.max_steps or math.ceil(recipe.optim.epochs * steps_per_epoch)

    model.use_feature_cache(recipe.batch.feature_cache_mb)
    engine, _ = create_engine(model, recipe, d, total_steps)
    dtype = torch.bfloat16 if use_bf16(recipe, d.device) else torch.float32
    if d.device.type == "cuda" and recipe.precision.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    state = TrainerState()
    resume = find_resume(out_dir, recipe.checkpoint.resume)
    log = MetricsLogger(out_dir, total_steps, d.is_main, recipe.logging.progress, recipe.logging.tensorboard,
                        description=f"stage {stage_label or recipe.stage}")
    if resume is not None:
        state = load_checkpoint(engine, resume, d.rank)
        log.info(f"resumed from {resume} at step {state.global_step}")
    if d.is_main:  # records past the resumed step (or of an earlier run) would be logged twice
        _truncate_metrics(out_dir / "metrics.jsonl", state.global_step)
    log.info(
        f"{recipe.name or 'recipe'}: {len(samples)} samples from {len(sources)} source(s), {d.world} rank(s), "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps; trainable parameters: "
        + ", ".join(f"{k} {v:,}" for k, v in trainable.items())
    )
    if compiled:
        log.info(compiled)
    log.advance_to(state.global_step)

    collator = Collator(tokenizer.pad_token_id, packing=recipe.batch.packing, max_length=recipe.batch.max_length)
    # the checkpoint holds the totals over ranks: rank 0 carries them on, the others start afresh
    refused: Counter[str] = Counter(state.refused if d.is_main else {})
    losses: list[float] = []
    tokens_window, window_start = 0, time.time()
    pending = [0, 0]  # this rank's samples and tokens not yet in state's totals
    last_loss = float("nan")
    engine.train()
    while state.global_step < total_steps:
        plan = plan0 if state.epoch == 0 else plan_epoch(
            lengths, multimodal, recipe.batch.micro, micro_per_step, recipe.seed, state.epoch, recipe.batch.group_by_length
        )
        sampler = RankBatchSampler(plan, d.rank, d.world, start=state.step_in_epoch * accum)
        loader = DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collator, num_workers=recipe.batch.num_workers,
            prefetch_factor=4 if recipe.batch.num_workers else None, persistent_workers=False,
        )
        micro_in_step = 0
        for batch in loader:
            for _sid, reason, _message in batch["refused"]:
                refused[reason] += 1
            loss, tokens = _micro_step(engine, batch, d.device, dtype, tokenizer.pad_token_id)
            losses.append(loss)
            tokens_window += tokens
            pending[0] += batch["n_samples"]
            pending[1] += tokens
            micro_in_step += 1
            if micro_in_step < accum:
                continue
            micro_in_step = 0
            state.global_step += 1
            state.step_in_epoch += 1
            if state.global_step % recipe.logging.every_steps == 0 or state.global_step == total_steps:
                last_loss = _all_mean(losses, d.device)
                tok = _all_sum(tokens_window, d.device)
                _add_totals(state, pending, d.device)
                now = time.time()
                log.log({
                    "stage": stage_label or recipe.stage,
                    "step": state.global_step,
                    "epoch": state.epoch,
                    "loss": last_loss,
                    "lr": engine.get_lr()[0],
                    "tokens_per_s": tok / max(1e-9, now - window_start),
                    "samples": state.samples_seen,
                })
                losses, tokens_window, window_start = [], 0, now
            if state.global_step % recipe.checkpoint.every_steps == 0 and state.global_step < total_steps:
                state.refused = _all_counts(refused)
                _add_totals(state, pending, d.device)
                save_checkpoint(engine, out_dir, state, d.rank, recipe.checkpoint.keep_last)
            if state.global_step >= total_steps:
                break
        else:
            state.epoch += 1
            state.step_in_epoch = 0
            continue
        break

    state.refused = _all_counts(refused)
    _add_totals(state, pending, d.device)
    save_checkpoint(engine, out_dir, state, d.rank, recipe.checkpoint.keep_last)
    export = out_dir / "export"
    if d.is_main:
        module = engine.module
        module.save_pretrained(export)
        tokenizer.save_pretrained(export)
        plot_loss_curve(read_metrics(out_dir / "metrics.jsonl"), out_dir / "loss.png", title=recipe.name or "loss")
        cache = model.feature_cache
        if cache is not None:
            log.info(f"feature cache: {cache.hits} of {cache.hits + cache.misses} images answered from it "
                     f"({len(cache)} kept, {cache.bytes / 2**20:.1f} MiB)")
        if state.refused:
            log.info("samples refused, by reason: " + ", ".join(f"{k}: {v}" for k, v in state.refused.items()))
        else:
            log.info("no samples refused")
    log.close()
    if dist.is_initialized():
        dist.barrier()
    return TrainResult(export, state.global_step, last_loss, state.refused, time.time() - start, trainable)
