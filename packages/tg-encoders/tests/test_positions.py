"""Fixed sine-cosine patch positions for small random towers."""

from __future__ import annotations

import pytest
import torch

from tg_encoders import build_encoder, tiny_encoder_specs
from tg_encoders.errors import TowerSpecError
from tg_encoders.tower_base import sincos_2d


def test_sincos_table_is_row_major_and_distinct() -> None:
    table = sincos_2d(4, 8)
    assert table.shape == (16, 8)
    # columns 0..3 share the y part within a row, rows share the x part within a column
    assert torch.equal(table[1, 4:], table[2, 4:])
    assert torch.equal(table[1, :4], table[5, :4])
    assert torch.cdist(table, table).add(torch.eye(16)).min() > 0.05


def test_sincos_needs_width_divisible_by_four() -> None:
    with pytest.raises(TowerSpecError, match="divisible by 4"):
        sincos_2d(4, 6)


def _linear_r2(features: torch.Tensor, target: torch.Tensor) -> float:
    x = torch.cat([features, torch.ones(len(features), 1)], dim=1)
    w = torch.linalg.lstsq(x, target[:, None]).solution
    residual = (x @ w)[:, 0] - target
    return float(1 - residual.pow(2).sum() / (target - target.mean()).pow(2).sum())


@pytest.mark.parametrize("tower", [0, 1])
def test_sincos_positions_make_patch_column_linearly_readable(tower: int) -> None:
    torch.manual_seed(0)
    pixels = torch.rand(16, 3, 64, 64)
    columns = (torch.arange(64) % 8).float().repeat(16)
    r2 = {}
    for mode in ("learned", "sincos"):
        torch.manual_seed(1)
        encoder = build_encoder(tiny_encoder_specs(pos_embed=mode))
        with torch.no_grad():
            feats = encoder.towers[tower](pixels).reshape(-1, encoder.towers[tower].hidden_size)
        r2[mode] = _linear_r2(feats, columns)
    assert r2["sincos"] > 0.8
    assert r2["sincos"] > r2["learned"] + 0.2


def test_sincos_survives_rebuild_from_specs_and_unknown_mode_is_refused() -> None:
    encoder = build_encoder(tiny_encoder_specs(pos_embed="sincos"))
    again = build_encoder(encoder.specs(), load_weights=False)
    assert torch.equal(
        encoder.towers[0].visual.positional_embedding, again.towers[0].visual.positional_embedding
    )
    with pytest.raises(TowerSpecError, match="pos_embed"):
        build_encoder(tiny_encoder_specs(pos_embed="rope"))
