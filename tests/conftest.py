"""Shared fixtures: tiny FER2013-format files, the real data path, isolated run/cache folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REAL_CSV = os.environ.get("FER2013_CSV", "")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own runs root and dataset cache."""
    monkeypatch.setenv("FER_RUNS", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.setenv("FER_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def real_csv() -> Path:
    if not REAL_CSV or not Path(REAL_CSV).exists():
        pytest.skip("real FER2013 not available: set FER2013_CSV to fer2013.csv[.gz] "
                    "(.ci/run sets it when ../shared/data/fer2013 exists)")
    return Path(REAL_CSV)


def fer_rows(n: int = 12, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Rows of a small valid fer2013.csv: (lines without header, images, labels, usages)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 48, 48), dtype=np.uint8)
    labels = np.arange(n) % 7
    usages = ["Training"] * (n - 4) + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    lines = [f"{l},{' '.join(map(str, im.ravel()))},{u}" for im, l, u in zip(images, labels, usages)]
    return lines, images, labels, usages


def write_csv(path: Path, lines: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory) -> str:
    """A fer2013.csv of 520 synthetic faces (400 Training, 60 PublicTest, 60 PrivateTest)."""
    from fer.data import load_dataset

    ds = load_dataset("synthetic")
    rows = np.concatenate([ds.indices("train")[:400], ds.indices("public_test")[:60],
                           ds.indices("private_test")[:60]])
    usage = {"train": "Training", "public_test": "PublicTest", "private_test": "PrivateTest"}
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for r in rows:
            f.write(f"{ds.labels[r]},{' '.join(map(str, ds.images[r].ravel()))},{usage[ds.splits[r]]}\n")
    return str(path)
