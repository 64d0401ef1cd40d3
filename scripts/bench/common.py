"""What the benchmark scripts share: mean ± std over runs, peak memory, and the JSON they write."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value), rounded to 0.01."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 2), "std": round(std, 2)}


def fmt(stat: dict[str, float], digits: int = 1) -> str:
    """``digits=2`` where a goal sits at a round number, so that 59.98 is not printed as 60.0."""
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark so far (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def environment() -> dict[str, str | int]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"date": datetime.now().isoformat(timespec="seconds"), "commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "command": " ".join([Path(sys.executable).name, *sys.argv])}


def dev_history(run_dir: Path) -> tuple[list[dict], dict]:
    """A finished run's dev evaluations from its ``metrics.jsonl``, and the one the trainer selected last."""
    metrics = Path(run_dir) / "metrics.jsonl"
    if not metrics.exists():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (has this run finished an epoch?)")
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    history = [h for h in history if h.get("split") == "dev"]
    return history, [h for h in history if h["best"]][-1]


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(), **payload}, indent=2))
    return path
