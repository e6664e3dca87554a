"""Training checkpoints through torch.distributed.checkpoint (DCP): saved on N ranks, loadable on M.

OUT/checkpoints/step_N/ holds the DCP files of model and optimizer (keyed by parameter names, so
they reshard), `rng_<rank>.pt` (each rank's RNG states) and `trainer_state.json` (step, the loader's
global position, counters). Everything is written into `.step_N.tmp/` first; rank 0 writes
trainer_state.json last and renames the directory, so a `step_N` directory is always complete
and a crash during a save leaves the previous checkpoints intact. Only the newest `keep` remain.

Fault hooks for tests: LLAMAFORGE_FAULT=kill_in_save:N kills the process (SIGKILL) in the middle
of the save of step N, after the tensors are written and before the rename; kill_at_step:N kills it
right after step N (its checkpoint, if any, is complete).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from llamaforge.io import atomic_write_json
from llamaforge.train.parallel import DistInfo, barrier

STATE = "trainer_state.json"
_STEP = re.compile(r"^step_(\d+)$")


def _fault(kind: str, step: int) -> None:
    spec = os.environ.get("LLAMAFORGE_FAULT", "")
    for part in filter(None, spec.split(",")):
        name, _, arg = part.partition(":")
        if name == kind and int(arg) == step:
            os.kill(os.getpid(), signal.SIGKILL)


def complete_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of complete checkpoints, oldest first."""
    d = Path(ckpt_dir)
    out = []
    if d.is_dir():
        for p in d.iterdir():
            m = _STEP.match(p.name)
            if m and (p / STATE).is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def rng_state() -> dict[str, torch.Tensor]:
    st = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def save_checkpoint(ckpt_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], info: DistInfo, keep: int) -> Path:
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"step_{step}"
    tmp = ckpt_dir / f".step_{step}.tmp"
    if info.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier(info)
    msd, osd = get_state_dict(model, optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to")  # single process: expected
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng_{info.rank}.pt")
    barrier(info)
    _fault("kill_in_save", step)
    if info.is_main:
        atomic_write_json(tmp / STATE, {**state, "step": step, "world": info.world, "dp": info.dp, "tp": info.tp,
                                         "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in complete_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return final


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    info: DistInfo) -> dict[str, Any]:
    """Load model, optimizer and this rank's RNG from `path` (any world size); return trainer_state."""
    path = Path(path)
    msd, osd = get_state_dict(model, optimizer)
    sd = {"model": msd, "optim": osd}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to")
        dcp.load(sd, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    rng_file = path / f"rng_{info.rank}.pt"
    if not rng_file.is_file():
        rng_file = path / "rng_0.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return json.loads((path / STATE).read_text())


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU (gathered from shards); every rank must call it."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts)
