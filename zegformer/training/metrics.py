"""Training logs: metrics.json (one JSON object per logged iteration), TensorBoard, console."""
from __future__ import annotations

import json
import logging
import resource
import sys
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on a GPU, else this process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


class MetricsWriter:
    """Appends to OUTPUT_DIR/metrics.json and writes TensorBoard events (rank 0 only).

    TensorBoard needs the `tensorboard` package; without it the events are skipped with one
    warning and metrics.json is still written.
    """

    def __init__(self, output_dir: Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.json"
        self.tb: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(output_dir))
        except ImportError:
            log.warning("tensorboard is not installed: no event files (metrics.json is written)")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = int(record["iteration"])
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, step)

    def write_eval(self, iteration: int, results: dict[str, float]) -> None:
        self.write({"iteration": iteration, **{f"eval/{k}": v for k, v in results.items()}})

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
