"""Shared pytest fixtures for the lookalike tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------
# Unit-test fixtures: the shared read-only sample catalogue
# --------------------------------------------------------------------------------------

SHARED_DATA = (REPO_ROOT / "../shared/data/fashion-5k").resolve()


@pytest.fixture(scope="session")
def shared_catalogue_dir() -> Path:
    """The read-only fashion-5k sample beside the repository; a clear failure (not a skip) if absent."""
    if not (SHARED_DATA / "styles.csv").is_file() or not (SHARED_DATA / "images").is_dir():
        pytest.fail(
            f"shared sample catalogue not found at {SHARED_DATA} (expected styles.csv and images/): "
            "these tests need ../shared/data/fashion-5k next to the repository",
            pytrace=False,
        )
    return SHARED_DATA
