"""ZeRO-2 on two CPU ranks (gloo) through the deepspeed launcher, against one process with the same global batch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tg_model.presets import build_model
from tg_train.metrics import read_metrics
from tg_train.recipe import load_recipe
from tg_train.trainer import train

# Both runs see the same micro-batches: one process accumulates the two micro-batch gradients of a step
# (each scaled by 1/2) in its fp32 buffer, the two ranks average them with a gloo all-reduce. That is the
# same sum in another order, so the runs differ by fp32 rounding (~1e-7 relative per step), and Adam,
# which divides by the gradients' running RMS, keeps it at that level over a few steps. 1e-4 on a loss
# of ~6 is far above that and far below what a real fault does (a rank training on the wrong
# micro-batch, or gradients summed instead of averaged, moves the second step's loss by > 1e-2).
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _optimizer_partition(checkpoint: Path, rank: int) -> tuple[int, int, int]:
    """(fp32 master elements, Adam exp_avg elements, partition count) held by one rank."""
    state = torch.load(checkpoint / "state" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
                       map_location="cpu", weights_only=False)["optimizer_state_dict"]
    fp32 = sum(t.numel() for t in state["single_partition_of_fp32_groups"])
    exp_avg = sum(s["exp_avg"].numel() for s in state["base_optimizer_state"]["state"].values())
    return fp32, exp_avg, state["partition_count"][0]


def _single_and_two_ranks(make_recipe, tmp_path: Path, clean_env, **optim) -> tuple[Path, Path]:
    """The same recipe as one process (two accumulation steps per optimiser step) and as two launched
    ranks (one micro-batch each); returns the two output directories."""
    common = {"optim": {"max_steps": 4, "lr": 1e-3, "warmup_ratio": 0.25, **optim}, "batch": {"global": 8, "micro": 4}}
    single = load_recipe(str(make_recipe("single", **common)))
    train(single)

    ranks = make_recipe("ranks", **common)
    launcher = [
        sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(_free_port()),
        # the console script, as a user would launch it; the launcher adds --local_rank=N to its arguments
        str(Path(sys.executable).parent / "tg-train"), "run", str(ranks),
    ]
    proc = subprocess.run(launcher, env=clean_env(DS_ACCELERATOR="cpu"), capture_output=True, text=True,
                          timeout=500, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "2 rank(s)" in " ".join(log.split()) and "Process" in log  # really ran as two launched processes
    return Path(single.output_dir), tmp_path / "run-ranks"


def _assert_same_training(one: Path, two: Path, weight_tolerance: float = WEIGHT_TOLERANCE) -> None:
    m_one, m_two = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    loss_one, loss_two = [r["loss"] for r in m_one], [r["loss"] for r in m_two]
    assert len(loss_one) == len(loss_two) == 4
    # samples and tokens are counted over both ranks
    assert [r["samples"] for r in m_two] == [r["samples"] for r in m_one] == [8, 16, 24, 32]
    state_one = json.loads((one / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    state_two = json.loads((two / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state_two["tokens_seen"] == state_one["tokens_seen"] > 0
    assert max(abs(a - b) for a, b in zip(loss_one, loss_two, strict=True)) < LOSS_TOLERANCE, (loss_one, loss_two)
    w_one = load_file(one / "export" / "model.safetensors")
    w_two = load_file(two / "export" / "model.safetensors")
    assert max((w_one[k] - w_two[k]).abs().max().item() for k in w_one) < weight_tolerance


def test_zero2_two_cpu_ranks_partition_the_optimizer_and_match_one_process(make_recipe, tmp_path: Path, clean_env):
    one, two = _single_and_two_ranks(make_recipe, tmp_path, clean_env)

    # the optimiser state is partitioned: each rank holds half of the single process's fp32 state
    single_ckpt, ranks_ckpt = one / "checkpoints" / "step-4", two / "checkpoints" / "step-4"
    whole, whole_avg, count = _optimizer_partition(single_ckpt, 0)
    assert count == 1
    trainable = sum(t.numel() for t in load_file(one / "export" / "model.safetensors").values())
    assert whole == whole_avg > 0 and whole <= trainable  # the frozen encoders hold no optimiser state
    parts = [_optimizer_partition(ranks_ckpt, r) for r in (0, 1)]
    assert not (ranks_ckpt / "state" / "zero_pp_rank_2_mp_rank_00_optim_states.pt").exists()
    for fp32, exp_avg, n in parts:
        assert n == 2 and fp32 == exp_avg
        assert abs(fp32 - whole / 2) <= 64, (fp32, whole)  # halves, up to DeepSpeed's alignment padding
    assert whole <= parts[0][0] + parts[1][0] < whole + 128

    # and it trains the same model
    _assert_same_training(one, two)


def test_muon_on_two_cpu_ranks_matches_one_process(make_recipe, tmp_path: Path, clean_env, small_llm):
    """DeepSpeed's Muon under ZeRO-2: a matrix split between the ranks' partitions is orthogonalised whole,
    so two ranks take the same steps as one process."""
    one, two = _single_and_two_ranks(make_recipe, tmp_path, clean_env, name="muon", muon_lr=0.05)
    # DeepSpeed's Newton-Schulz ("gram") runs in fp16 where the accelerator has it, a CPU included: the two
    # runs' different summation orders (one process of two threads, two of one) then move each
    # orthogonalised step by about 1% (measured up to 1.4%), a few 1e-5 in a weight, where the AdamW
    # run above agrees to fp32 rounding. A rank training on the wrong micro-batch changes the step's
    # direction itself, tens of percent of it.
    start, _ = build_model("tiny", seed=7, **small_llm)  # the recipes' seed: where both runs started
    w_start = {k: v.detach() for k, v in start.state_dict().items()}
    w_one = load_file(one / "export" / "model.safetensors")
    w_two = load_file(two / "export" / "model.safetensors")
    for name, w in w_one.items():
        moved = (w - w_start[name]).norm()
        if moved > 0:
            assert (w_two[name] - w).norm() < 0.05 * moved, name
    for rank in (0, 1):  # DeepSpeed built its Muon on both ranks, not the AdamW of the test above
        state = torch.load(two / "checkpoints" / "step-4" / "state" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
                           map_location="cpu", weights_only=False)["optimizer_state_dict"]
        assert {g["use_muon"] for g in state["base_optimizer_state"]["param_groups"]} == {False, True}, rank
    _assert_same_training(one, two, weight_tolerance=1e-3)


def test_one_cpu_process_does_not_build_the_shared_memory_all_reduce(tmp_path: Path, python_runner):
    """A one-rank CPU group has no peers: DeepSpeed's shared-memory op (a gcc build) is not made for it."""
    code = (
        "import deepspeed.comm.comm as comm\n"
        "from tg_train.engine import init_distributed\n"
        "d = init_distributed()\n"
        "print('world', d.world, 'shm', comm.cdb.shm_comm_op)\n"
    )
    result = python_runner(code, tmp_path, env={"DS_ACCELERATOR": "cpu"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "world 1 shm None" in result.stdout
    assert "built successfully" not in result.stdout + result.stderr
