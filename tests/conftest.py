"""Shared fixtures: small synthetic data, made on the fly (no large files in the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A valid AN2DL-2024-schema file: 12 random images, labels 0-7 as (N,1)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, images=rng.integers(0, 256, (12, 96, 96, 3), dtype=np.uint8), labels=(np.arange(12) % 8).reshape(-1, 1))
    return path
