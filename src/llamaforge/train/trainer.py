"""The one training loop: pretraining, SFT, reward models and PPO updates all run through `Trainer`.

A recipe supplies the model, a stateful iterator of this rank's micro-batches (with state_dict /
load_state_dict, so resume is exact), `loss_fn(model, batch) -> (loss, metrics)` and optionally
`eval_fn(model) -> metrics`. The Trainer owns everything else: parallelism (train/parallel.py),
AdamW and its schedule, gradient accumulation and clipping, bf16 autocast, checkpoints (DCP,
resumed from the newest complete one), metrics, plots, NaN stops, the final native checkpoint and
the manifest. See docs/guide/train.md, "Writing a recipe".
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llamaforge.errors import UserError
from llamaforge.train import parallel as par
from llamaforge.train.checkpointing import (
    _fault,
    complete_checkpoints,
    full_model_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from llamaforge.train.config import batch_layout
from llamaforge.train.metrics import MetricsLog, mfu, peak_flops, plot_metrics
from llamaforge.train.optim import build_optimizer, lr_at, set_lr

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, Any]]]


class TrainingDiverged(UserError):
    """The loss or gradient norm became NaN or inf; the last good checkpoint is kept."""


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _count_tokens(batch: Any) -> int:
    if isinstance(batch, dict) and isinstance(batch.get("tokens"), torch.Tensor):
        t = batch["tokens"]
        return t.shape[0] * max(1, t.shape[1] - 1)
    return 0


class Trainer:
    """Train `model` on `batches` with `loss_fn`; call `fit()`.

    cfg: any object with sections `train`, `optim`, `checkpoint`, `logging`, `parallel`
    (train/config.py); it is saved in the manifest. `info`: from `parallel.init_distributed`;
    the recipe builds its loader with `rank=info.dp_rank, world=info.dp` and `micro` from
    `Trainer.layout(cfg, info)`. `flops_per_token`: for MFU (0 = not reported). `final_fn(state_dict,
    path)` writes OUT/final on rank 0 (default: none). `init_fn(model)` initialises weights after
    parallelisation when the model was built on the meta device.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Iterator[Any], cfg: Any, out: str | Path,
                 info: par.DistInfo, *, eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
                 flops_per_token: float = 0.0, final_fn: Callable[[dict, Path], Any] | None = None,
                 init_fn: Callable[[nn.Module], None] | None = None, command: str = "train",
                 inputs: list[str | Path] | None = None, manifest_extra: dict[str, Any] | None = None):
        self.cfg, self.info, self.out = cfg, info, Path(out)
        self.loss_fn, self.batches, self.eval_fn = loss_fn, batches, eval_fn
        self.flops_per_token, self.final_fn = flops_per_token, final_fn
        self.command, self.inputs, self.manifest_extra = command, inputs or [], manifest_extra or {}
        self.micro, self.accum = self.layout(cfg, info)
        on_meta = any(p.is_meta for p in model.parameters())
        if not on_meta:
            model.to(info.device)  # before sharding, so DTensors and FSDP shards live on the device
        self.model = par.parallelize(model, info, cfg.parallel, cfg.train.dtype)
        if on_meta:
            if init_fn is None:
                raise ValueError("a model built on the meta device needs init_fn")
            self.model.to_empty(device=info.device)
            init_fn(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.step = 0
        self.tokens_seen = 0
        self.train_time_s = 0.0
        self.stop_reason = ""

    @staticmethod
    def layout(cfg: Any, info: par.DistInfo) -> tuple[int, int]:
        """(micro-batch per rank, accumulation steps) for `train.batch_size` global sequences."""
        return batch_layout(cfg.train.batch_size, cfg.train.micro_batch, info.dp)

    # -- contexts -----------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.train.dtype == "bf16":
            return torch.autocast(self.info.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def forward_context(self):
        """bf16 autocast (if asked) and loss-parallel cross-entropy (under TP): wrap forward + backward."""
        with par.loss_context(self.info), self.autocast():
            yield

    def log(self, msg: str) -> None:
        if self.info.is_main:
            print(msg, flush=True)

    # -- checkpoints ------------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def _state(self) -> dict[str, Any]:
        loader = self.batches.state_dict() if hasattr(self.batches, "state_dict") else None
        return {"loader": loader, "tokens_seen": self.tokens_seen, "train_time_s": self.train_time_s,
                "micro": self.micro, "accum": self.accum}

    def save(self) -> Path:
        return save_checkpoint(self.ckpt_dir, self.step, self.model, self.optimizer, self._state(), self.info,
                               self.cfg.checkpoint.keep)

    def maybe_resume(self) -> int:
        found = complete_checkpoints(self.ckpt_dir) if self.cfg.checkpoint.resume else []
        if not found:
            return 0
        step, path = found[-1]
        st = load_checkpoint(path, self.model, self.optimizer, self.info)
        if st.get("loader") is not None and hasattr(self.batches, "load_state_dict"):
            self.batches.load_state_dict(st["loader"])
        self.step, self.tokens_seen = step, int(st.get("tokens_seen", 0))
        self.train_time_s = float(st.get("train_time_s", 0.0))
        where = f" (saved on {st.get('world', 1)} ranks, resuming on {self.info.world})" \
            if st.get("world", 1) != self.info.world else ""
        self.log(f"resumed from {path} at step {step}{where}")
        return step

    # -- the loop ---------------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, Any] | None:
        """One optimizer step over `accum` micro-batches; None when the data ran out before it."""
        total_steps = self.cfg.train.steps
        lr = lr_at(step, self.cfg.optim, total_steps)
        set_lr(self.optimizer, lr)
        loss_sum = torch.zeros((), device=self.info.device)
        extra: dict[str, float] = {}
        tokens = 0
        sample_log = os.environ.get("LLAMAFORGE_SAMPLE_LOG")
        for i in range(self.accum):
            try:
                batch = next(self.batches)
            except StopIteration as e:
                if i:
                    raise RuntimeError("the batch iterator ran out in the middle of an optimizer step") from e
                self.stop_reason = str(e) or getattr(self.batches, "exhausted_reason", None) or "data exhausted"
                return None
            if sample_log and isinstance(batch, dict) and "ids" in batch:
                with open(f"{sample_log}.rank{self.info.rank}", "a") as f:
                    f.write(json.dumps({"step": step, "ids": batch["ids"]}) + "\n")
            tokens += _count_tokens(batch)
            batch = _to_device(batch, self.info.device)
            with self.forward_context():
                loss, metrics = self.loss_fn(self.model, batch)
                (loss / self.accum).backward()
            loss_sum += par.local_value(loss.detach()).float()
            for k, v in (metrics or {}).items():
                extra[k] = extra.get(k, 0.0) + float(v) / self.accum
        grad_norm = par.clip_grad_norm(self.params, self.cfg.optim.grad_clip)
        loss = par.all_mean(loss_sum / self.accum, self.info)
        loss_v, gn = float(loss), float(grad_norm)
        if not (math.isfinite(loss_v) and math.isfinite(gn)):
            self.optimizer.zero_grad(set_to_none=True)
            found = complete_checkpoints(self.ckpt_dir)
            kept = f"the last good checkpoint is {found[-1][1]}" if found else "no checkpoint was saved yet"
            raise TrainingDiverged(f"loss is {loss_v} (grad norm {gn}) at step {step}: training stopped; {kept}. "
                                   "Lower optim.lr, raise optim.warmup_steps or use train.dtype=fp32.")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens_all = tokens * self.info.dp
        return {"loss": loss_v, "lr": lr, "grad_norm": gn, "tokens": tokens_all, **extra}

    def evaluate(self) -> dict[str, float]:
        if self.eval_fn is None:
            return {}
        self.model.eval()
        try:
            with torch.no_grad(), self.forward_context():
                return dict(self.eval_fn(self.model))
        finally:
            self.model.train()

    def fit(self) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        t_start = time.time()
        start = self.maybe_resume()
        log = MetricsLog(self.out, info.is_main, start, cfg.logging.tensorboard)
        total = cfg.train.steps
        peak, peak_src = (peak_flops(info.device, cfg.train.dtype) if self.flops_per_token else (0.0, ""))
        bar = None
        if info.is_main and cfg.logging.progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)
        self.model.train()
        last_row: dict[str, Any] = {}
        t_log, tok_log = 0.0, 0  # step time and tokens since the last logged row (eval/saves excluded)
        saved_at = start
        if start >= total:
            self.stop_reason = f"already complete: step {start} of {total}"
        for step in range(start + 1, total + 1):
            t0 = time.perf_counter()
            row = self.train_step(step)
            if row is None:
                break
            self.step = step
            dt = time.perf_counter() - t0
            self.train_time_s += dt
            self.tokens_seen += row["tokens"]
            tok_log += row["tokens"]
            t_log += dt
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
            if step % cfg.logging.every == 0 or step == total or step == start + 1:
                tps = tok_log / t_log if t_log > 0 else 0.0
                last_row = {"step": step, "loss": row["loss"], "lr": row["lr"], "grad_norm": row["grad_norm"],
                            "tokens_per_s": tps, "tokens_seen": self.tokens_seen,
                            **{k: v for k, v in row.items() if k not in ("loss", "lr", "grad_norm", "tokens")}}
                if peak:
                    last_row["mfu"] = mfu(tps, self.flops_per_token, peak, info.world)
                log.log(last_row)
                if bar is None:
                    self.log(f"step {step}/{total} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                             f"grad_norm {row['grad_norm']:.3f} {tps:,.0f} tok/s"
                             + (f" mfu {last_row['mfu']:.1%}" if peak else ""))
                t_log, tok_log = 0.0, 0
            ev = cfg.logging.eval_every
            if self.eval_fn is not None and ev and step % ev == 0 and step != total:
                vals = self.evaluate()
                log.log({"step": step, **vals})
                self.log(f"step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in vals.items()))
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0:
                self.save()
                saved_at = step
            _fault("kill_at_step", step)
        if bar is not None:
            bar.close()
        if not self.stop_reason:
            self.stop_reason = f"reached train.steps = {total}"
        if self.step > saved_at:
            self.save()
        final_vals: dict[str, float] = {}
        if self.eval_fn is not None and self.step > start:
            final_vals = self.evaluate()
            log.log({"step": self.step, **final_vals})
            self.log(f"step {self.step}: " + " ".join(f"{k} {v:.4f}" for k, v in final_vals.items()))
        log.close()
        self.log(f"stopped: {self.stop_reason}")
        final_dir = self.out / "final"
        if cfg.checkpoint.final and self.final_fn is not None and (self.step > start or not final_dir.exists()):
            sd = full_model_state_dict(self.model)
            if info.is_main:
                self.final_fn(sd, final_dir)
                self.log(f"wrote {final_dir}")
        par.barrier(info)
        summary = {"steps": self.step, "stop_reason": self.stop_reason, "tokens_seen": self.tokens_seen,
                   "train_time_s": self.train_time_s, "last": last_row, **final_vals}
        if info.is_main:
            if cfg.logging.plots:
                plot_metrics(self.out)
            self._manifest(summary, time.time() - t_start, peak_src)
        return summary

    def _manifest(self, summary: dict[str, Any], wall: float, peak_src: str) -> None:
        from llamaforge.io import write_manifest

        extra: dict[str, Any] = {"summary": summary, "world_size": self.info.world, "dp_shard": self.info.dp,
                                 "tp": self.info.tp, "micro_batch": self.micro, "grad_accum": self.accum,
                                 "peak_flops_source": peak_src, **self.manifest_extra}
        try:
            from llamaforge.carbon import run_record

            extra["compute"] = run_record(self.train_time_s, count=self.info.world
                                          if self.info.device.type == "cuda" else None)
        except Exception as e:  # carbon accounting is optional; never fail a finished run over it
            extra["compute"] = {"error": f"{type(e).__name__}: {e}"}
        write_manifest(self.out, self.command, self.cfg, self.inputs, wall, **extra)
