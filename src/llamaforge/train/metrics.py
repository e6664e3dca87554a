"""Honest training metrics: tokens/s, MFU against a per-device peak, metrics.jsonl, plots, TensorBoard.

MFU = tokens/s * flops_per_token / (peak FLOP/s per device * devices), with flops_per_token from
`ModelArgs.flops_per_token` (6N + 12*L*d*T, PaLM appendix B; N without the input embedding).
GPU peaks are the vendors' dense numbers; a CPU's peak is measured with a large matmul at the current
thread count when a run starts, and the best measurement so far is cached in
~/.cache/llamaforge/peak_flops.json (a busy machine gives low single measurements).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

CACHE = Path(os.environ.get("LLAMAFORGE_CACHE", Path.home() / ".cache" / "llamaforge")) / "peak_flops.json"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def measure_cpu_peak(dtype: str = "fp32", n: int = 2048, reps: int = 3) -> float:
    """Best FLOP/s of an n^3 matmul at the current thread count."""
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def gpu_peak(name: str, dtype: str = "fp32") -> tuple[float, str]:
    """(peak FLOP/s, source) of a CUDA device by name, from the planner's table (one table for both)."""
    from llamaforge.carbon import device_kind
    from llamaforge.plan_compute import GPUS

    key = device_kind(name)
    if key in GPUS:
        return GPUS[key].peak(dtype), f"table: {key} {dtype}"
    return GPUS["a100"].peak(dtype), f"unknown GPU {name!r}: assumed A100 {dtype}"


def peak_flops(device: torch.device | str, dtype: str = "fp32") -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number comes from)."""
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device), dtype)
    key = f"{_cpu_name()}|threads={torch.get_num_threads()}|{dtype}"
    try:
        cache = json.loads(CACHE.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    entry = cache.get(key)
    entry = entry if isinstance(entry, dict) else {"flops": 0.0, "samples": 0}
    # Measured at every start (about 0.3 s) and the best kept: a shared machine can be busy during any
    # one measurement, so the cache converges on the true peak instead of freezing a low one.
    entry = {"flops": max(entry["flops"], measure_cpu_peak(dtype)), "samples": entry["samples"] + 1}
    cache[key] = entry
    try:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_name(f".{CACHE.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, CACHE)
    except OSError:
        pass
    return entry["flops"], f"measured: 2048^3 {dtype} matmul, {torch.get_num_threads()} threads"


def mfu(tokens_per_s: float, flops_per_token: float, peak: float, devices: int = 1) -> float:
    return tokens_per_s * flops_per_token / (peak * devices)


class MetricsLog:
    """OUT/metrics.jsonl (rank 0), with rows after a resumed step dropped, plus TensorBoard if asked."""

    def __init__(self, out: Path, enabled: bool, resume_step: int = 0, tensorboard: bool = False):
        self.path = Path(out) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = read_metrics(self.path) if self.path.exists() else []
        keep = [r for r in rows if r.get("step", 0) <= resume_step]
        if len(keep) != len(rows) or (rows and resume_step == 0):
            from llamaforge.io import atomic_write_text

            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out) / "tensorboard"))
            except ImportError:
                print("logging.tensorboard: the tensorboard package is not installed; logging to metrics.jsonl only")

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return rows


def plot_metrics(out: str | Path, keys: tuple[str, ...] = ("loss", "val_loss")) -> Path | None:
    """OUT/plots/loss.png (train and validation loss against step) and OUT/plots/lr.png."""
    path = Path(out) / "metrics.jsonl"
    if not path.exists():
        return None
    rows = read_metrics(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = Path(out) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if k in r]
        if pts:
            ax.plot(*zip(*pts), label=k, marker="o" if k.startswith("val") else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(plots / "loss.png", dpi=100)
    plt.close(fig)
    pts = [(r["step"], r["lr"]) for r in rows if "lr" in r]
    if pts:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(*zip(*pts))
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        fig.tight_layout()
        fig.savefig(plots / "lr.png", dpi=100)
        plt.close(fig)
    return plots / "loss.png"
