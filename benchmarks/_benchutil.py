"""Shared helpers for the benchmark scripts (stdlib only at import time).

The scripts run as ``python benchmarks/<script>.py`` from the repository root (or from anywhere):
:func:`setup_paths` puts the repository root on ``sys.path`` so ``training`` and
``breakfix_desktop`` import without installing anything.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "brain-tumor-mri"


def setup_paths() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def default_threads() -> int:
    """Cores this process may run on (respects taskset / cgroup CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def pin_thread_env(threads: int) -> None:
    """Set the BLAS/OpenMP thread variables; must run before numpy / torch are imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def spread(xs: Sequence[float]) -> Dict[str, float]:
    """median / min / max / relative half-range (a crude noise figure) of one arm's samples."""
    if not xs:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "rel_range_pct": float("nan"), "n": 0}
    m = median(xs)
    return {
        "median": m,
        "min": float(min(xs)),
        "max": float(max(xs)),
        "rel_range_pct": 100.0 * (max(xs) - min(xs)) / m if m else float("nan"),
        "n": len(xs),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover
        return None


def environment(threads: int) -> Dict[str, Any]:
    """Machine and software facts recorded with every result file."""
    import numpy as np
    import torch

    env: Dict[str, Any] = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": default_threads(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": loadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
        env["ort_available_providers"] = onnxruntime.get_available_providers()
    except ImportError:  # pragma: no cover
        pass
    return env


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_json(path: Path, data: Any) -> Path:
    from training.engine import write_json as _write_json  # the project's one atomic JSON writer

    return _write_json(path, data)


def fmt(x: Optional[float], digits: int = 1) -> str:
    if x is None or x != x:  # None or NaN
        return "-"
    return f"{x:,.{digits}f}"
