from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
SHARED = PROJECT.parent / "shared"
SHARED_DATA = SHARED / "data"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test saying which one is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found: {path} (tests read ../shared/data when present)")
    return path


@pytest.fixture
def project() -> Path:
    return PROJECT


def need_isolation(box) -> None:
    """Skip unless every OS protection of the sandbox is in force here."""
    if os.geteuid() != 0 or not box.bwrap or not box.cgroups:
        pytest.skip("needs root, bubblewrap and cgroups (the full isolation)")


@pytest.fixture
def one_slot():
    """A fresh sandbox with one slot: consecutive runs share its zygotes."""
    from wavecoder.evaluate import sandbox as sb

    with sb.Sandbox(workers=1) as box:
        yield box
