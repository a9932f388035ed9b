"""Atomic checkpoints: every rank writes into a hidden directory that is renamed once complete.

A kill during a save leaves only the hidden directory, which is ignored (and cleaned up later),
so the previous checkpoint stays usable. A checkpoint holds DeepSpeed's model, optimiser and
scheduler states, each rank's RNG states, and the trainer's position in the data.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from tg_train.recipe import RecipeError

_STEP_DIR = re.compile(r"^step-(\d+)$")
TAG = "state"
_SHAPE_MISMATCH = ("size mismatch", "Missing key", "Unexpected key")


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0  # optimiser steps done in the current epoch
    samples_seen: int = 0
    tokens_seen: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").is_file()]


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_checkpoint(engine: Any, output_dir: str | Path, state: TrainerState, rank: int, keep_last: int) -> Path:
    """Collective: every rank must call it. Returns the finished checkpoint directory."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{state.global_step}"
    tmp = root / f".tmp-step-{state.global_step}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    _barrier()
    engine.save_checkpoint(str(tmp), tag=TAG, save_latest=False)
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    _barrier()
    if rank == 0:
        (tmp / "trainer_state.json").write_text(json.dumps(state.to_dict(), indent=2))
        if final.exists():  # a rerun of the same step: replace it
            shutil.rmtree(final)
        tmp.rename(final)
        for old in complete_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(engine: Any, path: str | Path, rank: int) -> TrainerState:
    """Restore model, optimiser, scheduler, this rank's RNG and the data position."""
    path = Path(path)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no trainer_state.json)")
    try:
        load_path, _ = engine.load_checkpoint(
            str(path), tag=TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
    except RuntimeError as e:
        # torch's load_state_dict words for a state dict that does not fit the model
        lines = [line.strip() for line in str(e).splitlines() if any(m in line for m in _SHAPE_MISMATCH)]
        if not lines:
            raise
        detail = lines[0]
        raise RecipeError(
            f"{path} was written by a model of another shape than this stage's ({detail}); it cannot be resumed. "
            "Remove that run's checkpoints, or give this stage another output_dir"
        ) from None
    if load_path is None:
        raise FileNotFoundError(f"DeepSpeed found no checkpoint under {path}/{TAG}")
    rng_file = path / f"rng-rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return TrainerState(**json.loads((path / "trainer_state.json").read_text()))


def find_resume(output_dir: str | Path, setting: str) -> Path | None:
    if setting == "never":
        return None
    if setting == "auto":
        done = complete_checkpoints(output_dir)
        return done[-1] if done else None
    path = Path(setting)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"checkpoint.resume = {setting!r} is not a complete checkpoint directory")
    return path
