"""DeepSpeed set-up: process group, the DeepSpeed config built from a recipe, optimiser, schedule.

The same code runs as one plain process (a one-rank process group is made for it), under the
``deepspeed`` launcher on GPUs, and on CPU ranks with gloo (``DS_ACCELERATOR=cpu``).
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tg_train.recipe import Recipe, RecipeError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _skip_shared_memory_op() -> None:
    """One CPU rank has no peers: don't compile DeepSpeed's shared-memory all-reduce for it.

    DeepSpeed builds that C++ op for every CPU process group, which costs half a minute with gcc on
    a fresh machine; with one rank it is never called. Marking it incompatible makes DeepSpeed fall
    back to plain gloo, which is what one rank uses anyway.
    """
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def init_distributed() -> DistInfo:
    """Join the launcher's process group, or make a one-rank group for a plain process."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if "RANK" not in os.environ:
        os.environ.update(
            {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": os.environ.get("MASTER_PORT", str(_free_port()))}
        )
    accel = get_accelerator()
    backend = "gloo" if accel.device_name() == "cpu" else accel.communication_backend_name()
    if accel.device_name() == "cpu" and os.environ.get("WORLD_SIZE") == "1":
        _skip_shared_memory_op()
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if accel.device_name() == "cpu":
        device = torch.device("cpu")
    else:
        accel.set_device(local_rank)
        device = torch.device(accel.device_name(), local_rank)
    return DistInfo(rank, world, local_rank, device)


def use_bf16(recipe: Recipe, device: torch.device) -> bool:
    setting = recipe.precision.bf16
    if setting == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return setting == "true"


def gradient_accumulation(recipe: Recipe, world: int) -> int:
    per_step = recipe.batch.micro * world
    if recipe.batch.global_size % per_step:
        raise RecipeError(
            f"batch.global ({recipe.batch.global_size}) must be a multiple of batch.micro x ranks "
            f"({recipe.batch.micro} x {world}); change batch.micro or batch.global"
        )
    return recipe.batch.global_size // per_step


def deepspeed_config(recipe: Recipe, world: int, bf16: bool) -> dict[str, Any]:
    """The DeepSpeed JSON for a recipe: ZeRO stage, batch sizes, clipping, precision."""
    if recipe.deepspeed.config:
        with open(recipe.deepspeed.config) as f:
            try:
                config = json.load(f)
            except json.JSONDecodeError as e:
                raise RecipeError(f"deepspeed.config {recipe.deepspeed.config}: not valid JSON ({e})") from None
        _check_batch_agrees(config, recipe, world)
        return config
    ds = recipe.deepspeed
    zero: dict[str, Any] = {
        "stage": ds.zero_stage,
        "overlap_comm": ds.overlap_comm,
        "contiguous_gradients": ds.contiguous_gradients,
        "reduce_bucket_size": ds.reduce_bucket_size,
        "allgather_bucket_size": ds.allgather_bucket_size,
    }
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    extra: dict[str, Any] = {"optimizer": muon_optimizer_config(recipe)} if recipe.optim.name == "muon" else {}
    return {
        "train_batch_size": recipe.batch.global_size,
        "train_micro_batch_size_per_gpu": recipe.batch.micro,
        "gradient_accumulation_steps": gradient_accumulation(recipe, world),
        "gradient_clipping": recipe.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
        **extra,
    }


def muon_optimizer_config(recipe: Recipe) -> dict[str, Any]:
    """DeepSpeed's Muon: it partitions and orthogonalises under ZeRO itself, so it is built from the
    config; the matrices take ``muon_lr``, everything else AdamW at ``lr`` (both on the recipe's schedule)."""
    o = recipe.optim
    return {
        "type": "Muon",
        "params": {
            "lr": o.lr, "adam_lr": o.lr, "muon_lr": o.muon_lr, "momentum": o.muon_momentum,
            "betas": list(o.betas), "eps": o.eps, "weight_decay": o.weight_decay, "ns_method": o.muon_ns_method,
        },
    }


def _check_batch_agrees(config: dict[str, Any], recipe: Recipe, world: int) -> None:
    """A user's DeepSpeed JSON is taken as-is, but the data plan follows [batch]: they must agree."""
    accum = gradient_accumulation(recipe, world)
    wanted = {
        "train_batch_size": recipe.batch.global_size,
        "train_micro_batch_size_per_gpu": recipe.batch.micro,
        "gradient_accumulation_steps": accum,
    }
    wrong = {k: config[k] for k, v in wanted.items() if k in config and config[k] != v}
    if wrong:
        raise RecipeError(
            f"deepspeed.config {recipe.deepspeed.config}: {wrong} disagree with the recipe's [batch] "
            f"(global {recipe.batch.global_size}, micro {recipe.batch.micro}, so {accum} accumulation step(s) "
            f"on {world} rank(s)); make them equal or leave them out of the JSON"
        )
    for key, value in wanted.items():  # DeepSpeed needs two of the three; give it all three
        config.setdefault(key, value)


def lr_lambda(step: int, total: int, warmup: int, scheduler: str, min_ratio: float) -> float:
    """Linear warm-up, then cosine / linear decay to ``min_ratio`` (or constant)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if scheduler == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * decay


def param_groups(model: nn.Module, recipe: Recipe, with_lr: bool = True) -> list[dict[str, Any]]:
    """Trainable parameters by component; the projector may have its own lr; no decay on biases/norms.

    ``with_lr=False`` leaves the learning rate to the optimiser's own settings (Muon sets one for
    matrices and one for the rest, and a group's lr would override both)."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        component = "projector" if name.startswith("projector.") else "llm"
        decay = recipe.optim.weight_decay > 0 and p.ndim >= 2
        groups.setdefault((component, decay), []).append(p)
    out = []
    for (component, decay), params in groups.items():
        lr = recipe.train.projector_lr if component == "projector" and recipe.train.projector_lr > 0 else recipe.optim.lr
        out.append({
            "params": params,
            **({"lr": lr} if with_lr else {}),
            "weight_decay": recipe.optim.weight_decay if decay else 0.0,
            "name": f"{component}{'' if decay else '_no_decay'}",
        })
    return out


def create_engine(model: nn.Module, recipe: Recipe, dist: DistInfo, total_steps: int) -> tuple[Any, Any]:
    """``deepspeed.initialize`` with our optimiser and schedule (unless the user's JSON brings its own)."""
    import deepspeed

    bf16 = use_bf16(recipe, dist.device)
    config = deepspeed_config(recipe, dist.world, bf16)
    warmup = math.ceil(recipe.optim.warmup_ratio * total_steps)
    optimizer = None
    model_parameters: list[Any] = [p for p in model.parameters() if p.requires_grad]
    muon = recipe.optim.name == "muon"  # (the recipe refuses it beside a user's DeepSpeed JSON)
    if "optimizer" not in config:
        # torch's fused AdamW runs on CUDA and CPU alike; on a small CPU model the unfused update's
        # many elementwise passes are a sixth of the step
        optimizer = torch.optim.AdamW(
            param_groups(model, recipe), lr=recipe.optim.lr, betas=tuple(recipe.optim.betas), eps=recipe.optim.eps,
            fused=dist.device.type in ("cuda", "cpu"),
        )
    elif muon:  # built by DeepSpeed from the config's optimizer block
        model_parameters = param_groups(model, recipe, with_lr=False)
    o = recipe.optim

    def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """Called by DeepSpeed on the optimiser it steps (ours, or the Muon it built)."""
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total_steps, warmup, o.scheduler, o.min_lr_ratio))

    scheduler = schedule if "scheduler" not in config and (optimizer is not None or muon) else None
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        model_parameters=model_parameters if optimizer is None else None,
        config=config,
        dist_init_required=False,
    )
    return engine, config
