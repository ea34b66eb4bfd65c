"""Loading the real FER2013 CSV: our loader (cold and cached) vs the common pandas approach.

Baseline (the way course code usually reads fer2013.csv): ``pd.read_csv`` on the ``.csv.gz``,
then ``np.array(s.split(), dtype=np.uint8)`` for each row's pixel string in Python, stacked.
Ours, parse: :func:`fer.data.kaggle.read_fer2013_csv` (gunzip + parse + every check: the same
work as the baseline). Ours, cold load: :func:`fer.data.load_dataset` with an empty cache folder
(adds the file's SHA-256 and writing the cache entry). Ours, cached: the same call again. All give
the same images and labels (checked). Same process, same machine, one run of each; module
imports are done beforehand.
Prints a table (wall and CPU seconds; CPU time is the fairer figure on a busy machine), then one
JSON line with the figures, ``ratio`` (pandas wall time / our parse wall time), ``cpu_ratio``
and ``ratio_cold_load`` (pandas / our whole cold load).

    python benchmarks/load_fer2013.py [--data ../shared/data/fer2013/fer2013.csv.gz]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer.data import load_dataset

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "fer2013.csv.gz"


def pandas_load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    df = pd.read_csv(path)
    images = np.stack([np.array(s.split(), dtype=np.uint8) for s in df["pixels"]]).reshape(-1, 48, 48)
    return images, df["emotion"].to_numpy()


def timed(fn):
    """(wall seconds, CPU seconds of this process, all threads, result)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("FER2013_CSV", str(DEFAULT)))
    args = p.parse_args()
    path = Path(args.data)
    if not path.exists():
        print(f"no FER2013 CSV at {path} (pass --data or set FER2013_CSV)", file=sys.stderr)
        return 2
    for module in ("pandas", "fer.data.formats"):  # imports are not part of either loader's time
        importlib.import_module(module)
    from fer.data.kaggle import read_fer2013_csv

    t_parse, c_parse, parsed = timed(lambda: read_fer2013_csv(path))
    with tempfile.TemporaryDirectory() as cache:
        t_cold, c_cold, ours = timed(lambda: load_dataset(path, cache_dir=cache))
        assert ours.provenance["cache"] == "miss"
        t_cached, c_cached, again = timed(lambda: load_dataset(path, cache_dir=cache))
        assert again.provenance["cache"] == "hit"
    t_pandas, c_pandas, (images, labels) = timed(lambda: pandas_load(path))
    for ds in (parsed, ours, again):
        assert np.array_equal(images, ds.images) and np.array_equal(labels, ds.labels), "results differ"
    ratio, cpu_ratio, ratio_load = t_pandas / t_parse, c_pandas / c_parse, t_pandas / t_cold
    rows = [("pandas read_csv + str.split per row", t_pandas, c_pandas),
            ("ours, parse (gunzip + parse)", t_parse, c_parse),
            ("ours, cold load (+ SHA-256, cache write)", t_cold, c_cold),
            ("ours, cached load (SHA-256 memo + .npz)", t_cached, c_cached)]
    load = os.getloadavg()[0]
    print(f"{path.name}: {len(ours):,} rows, {path.stat().st_size / 1e6:.1f} MB on disk, "
          f"cpus {os.cpu_count()}, load average {load:.1f}")
    print(f"  {'':42s} {'wall s':>8s} {'CPU s':>8s}")
    for name, t, c in rows:
        print(f"  {name:42s} {t:8.2f} {c:8.2f}")
    print(f"  pandas / our parse: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU (goal >= 5x); pandas / our cold load "
          f"{ratio_load:.1f}x; cached load {t_cached:.2f} s (goal < 1 s)")
    print(json.dumps({"benchmark": "load_fer2013", "rows": len(ours), "pandas_s": round(t_pandas, 3),
                      "ours_parse_s": round(t_parse, 3), "ours_cold_load_s": round(t_cold, 3),
                      "ours_cached_s": round(t_cached, 3), "pandas_cpu_s": round(c_pandas, 3),
                      "ours_parse_cpu_s": round(c_parse, 3), "ratio": round(ratio, 2),
                      "cpu_ratio": round(cpu_ratio, 2), "ratio_cold_load": round(ratio_load, 2),
                      "load_average": round(load, 2), "goal_ratio": 5, "goal_cached_s": 1.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
