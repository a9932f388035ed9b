"""Test fixtures shared by every package's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def _find_shared_fixtures() -> Path | None:
    """The real-format files in ``../shared/fixtures`` (or ``$TG_SHARED_FIXTURES``)."""
    candidates = [os.environ.get("TG_SHARED_FIXTURES"), ROOT.parent / "shared" / "fixtures", "/work/shared/fixtures"]
    for c in candidates:
        if c and (Path(c) / "README.md").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    path = _find_shared_fixtures()
    if path is None:
        pytest.fail(
            "the shared real-format fixtures were not found: expected ../shared/fixtures beside the "
            "project root, or set TG_SHARED_FIXTURES to their directory"
        )
    return path
