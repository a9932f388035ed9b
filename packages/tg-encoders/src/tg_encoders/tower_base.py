"""What every vision tower shares: its own pixel normalisation, input checks and spec checks."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tg_encoders.errors import ImageInputError, TowerSpecError, WeightsError


class TowerBase(nn.Module):
    """Normalises inside the tower so one [0, 1] tensor can feed towers with different statistics.

    The statistics are constants of the spec, not state: they are not in the state dict, so casting
    a model to bf16, building it on the ``meta`` device or loading a bf16 checkpoint never rounds
    or loses them; normalisation always runs in float32.
    """

    name: str
    image_size: int
    patch_size: int
    grid: int
    hidden_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __init__(self, name: str, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.name = name
        self.mean = _three_floats(mean, "mean")
        self.std = _three_floats(std, "std")
        if min(self.std) <= 0:
            raise TowerSpecError(f"tower {name!r}: std must be positive, got {self.std}")
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def _input_dtype(self) -> torch.dtype:
        raise NotImplementedError

    def _stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as float32 ``(1, 3, 1, 1)`` tensors on ``device`` (made once per device)."""
        if device not in self._stats:
            # Normal tensors even when first asked for under inference_mode: later training
            # forwards must be able to use them in autograd.
            with torch.inference_mode(False):
                self._stats[device] = (
                    torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                    torch.tensor(self.std, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                )
        return self._stats[device]

    def normalise_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """Check ``(B, 3, S, S)`` pixels in [0, 1] and normalise them in float32 for this tower."""
        expected = (3, self.image_size, self.image_size)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise ImageInputError(
                f"tower {self.name!r} expects pixels of shape (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(pixels.shape)}; process images with ImageProcessor({self.image_size})"
            )
        if not pixels.is_floating_point():
            raise ImageInputError(
                f"tower {self.name!r} expects float pixels in [0, 1], got dtype {pixels.dtype}"
            )
        mean, std = self._stats_on(pixels.device)
        x = (pixels.float() - mean) / std
        return x.to(self._input_dtype())

    def describe(self) -> dict[str, Any]:
        """Dims and normalisation, for listings and file metadata."""
        return {
            "name": self.name,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "grid": self.grid,
            "num_patches": self.num_patches,
            "hidden_size": self.hidden_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }


POS_EMBED_MODES = ("learned", "sincos")


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine positions (MAE style), ``(grid * grid, dim)`` in row-major patch order."""
    if dim % 4:
        raise TowerSpecError(f"sincos positions need a width divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    xs, ys = x.flatten()[:, None] * omega, y.flatten()[:, None] * omega
    return torch.cat([xs.sin(), xs.cos(), ys.sin(), ys.cos()], dim=1)


def set_patch_positions(table: torch.Tensor, grid: int, mode: str, where: str) -> None:
    """Overwrite the patch rows (the last grid**2) of a position table for ``mode = "sincos"``.

    For random small towers (the ``tiny`` preset) whose learned positions were never trained,
    fixed sine-cosine positions make where a patch lies readable from its features, as it is in
    pretrained towers. Loaded weights replace them like any other parameter.
    """
    if mode not in POS_EMBED_MODES:
        raise TowerSpecError(f"{where}: pos_embed must be one of {list(POS_EMBED_MODES)}, got {mode!r}")
    if mode != "sincos" or table.is_meta:
        return
    with torch.no_grad():
        rows = table.reshape(-1, table.shape[-1])
        rows[rows.shape[0] - grid * grid :] = sincos_2d(grid, rows.shape[-1]).to(rows.dtype)
        if rows.shape[0] > grid * grid:
            rows[: rows.shape[0] - grid * grid] = 0


def _three_floats(values: Sequence[float], what: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise TowerSpecError(f"{what} needs three values (R, G, B), got {list(values)}")
    return out  # type: ignore[return-value]


def check_keys(spec: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = set(allowed)
    unknown = sorted(set(spec) - allowed)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TowerSpecError(f"{where}: unknown field(s) {', '.join(hints)}; known: {sorted(allowed)}")


def exactly_one_source(spec: Mapping[str, Any], where: str) -> None:
    if ("model" in spec) == ("arch" in spec):
        raise TowerSpecError(
            f"{where}: give exactly one of 'model' (a library model name) or 'arch' (a small "
            f"architecture dict), got {sorted(k for k in ('model', 'arch') if k in spec) or 'neither'}"
        )


def block_index(layer: Any, depth: int, where: str) -> int:
    """A Python-style block index (-1 is the last block) resolved against ``depth``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not -depth <= layer < depth:
        raise TowerSpecError(
            f"{where}: layer must be an int block index in [{-depth}, {depth - 1}] "
            f"(-1 = last block, -2 = penultimate), got {layer!r}"
        )
    return layer % depth


def image_size_of(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TowerSpecError(f"{where}: image_size must be a positive int (square input), got {value!r}")
    return value


def local_checkpoint(pretrained: Any, preferred_names: Sequence[str], where: str) -> Path | None:
    """The checkpoint file that ``pretrained`` points at, when it is a path on this machine."""
    if not isinstance(pretrained, (str, Path)):
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in preferred_names:
            if (path / name).is_file():
                return path / name
        found = sorted(p.name for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".pth", ".pt"})
        if len(found) == 1:
            return path / found[0]
        raise WeightsError(
            f"{where}: directory {path} holds {found or 'no checkpoint files'}; expected one of "
            f"{list(preferred_names)} or a single .safetensors/.bin/.pth/.pt file; pass the file itself"
        )
    return None
