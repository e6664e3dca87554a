"""Parallelism and memory/speed options applied to the plain model from outside, in torchtitan's order:
tensor + sequence parallel, activation checkpointing, per-block compile, FSDP2.

Tensor parallel is Megatron's layout with sequence parallelism (Korthikanti et al. 2022): wq/wk/wv/w1/w3
and the output head column-wise, wo/w2 row-wise, RMSNorms and the embedding output sharded on the
sequence dimension, and the vocabulary-sharded logits fed to a loss-parallel cross-entropy.
FSDP2 shards every block and the root over the `dp_shard` mesh dimension, prefetching the next
block's all-gather so communication overlaps compute. Single-process runs use none of it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from llamaforge.errors import UserError
from llamaforge.train.config import ParallelSection


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    mesh: object | None = None  # DeviceMesh with dims ("dp_shard", "tp") when world > 1
    dp: int = 1
    tp: int = 1

    @property
    def dp_rank(self) -> int:
        return self.mesh["dp_shard"].get_local_rank() if self.mesh is not None else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train.device is cuda but no CUDA device is available; use --train.device=cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def resolve_degrees(world: int, dp_shard: int, tp: int) -> tuple[int, int]:
    """(dp_shard, tp) with -1 meaning "the rest"; their product must be the world size."""
    if tp == -1 and dp_shard == -1:
        raise UserError("parallel.dp_shard and parallel.tp cannot both be -1")
    if tp == -1:
        tp = world // dp_shard if dp_shard and world % dp_shard == 0 else 0
    if dp_shard == -1:
        dp_shard = world // tp if tp and world % tp == 0 else 0
    if dp_shard < 1 or tp < 1 or dp_shard * tp != world:
        raise UserError(f"parallel.dp_shard ({dp_shard}) x parallel.tp ({tp}) must equal the world size {world} "
                        "(torchrun --nproc_per_node x --nnodes); -1 means the rest")
    return dp_shard, tp


def init_distributed(cfg: ParallelSection, device_name: str = "auto") -> DistInfo:
    """Join the torchrun job if there is one (gloo on CPU, NCCL on GPU) and build the device mesh."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    dp, tp = resolve_degrees(world, cfg.dp_shard, cfg.tp)
    if world == 1:
        return DistInfo(device=device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (dp, tp), mesh_dim_names=("dp_shard", "tp"))
    return DistInfo(rank, world, local_rank, device, mesh, dp, tp)


# -- tensor + sequence parallel ----------------------------------------------------------------
def apply_tp(model: nn.Module, tp_mesh, loss_parallel: bool = True) -> None:
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    args, tp = model.args, tp_mesh.size()
    for name, n in (("n_heads", args.n_heads), ("n_kv_heads", args.n_kv_heads), ("hidden_dim", args.hidden_dim)):
        if n % tp:
            raise UserError(f"model {name} = {n} is not divisible by parallel.tp = {tp}; choose a tp that divides "
                            "the number of attention heads and key/value heads")
    parallelize_module(model, tp_mesh, {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
        "norm": SequenceParallel(),
        "output": ColwiseParallel(input_layouts=Shard(1), output_layouts=Shard(-1) if loss_parallel else Replicate(),
                                  use_local_output=not loss_parallel),
    })
    # Attention.forward(x, cos, sin, mask, cache, layer, input_pos): only x is laid out.
    attn_in = (Shard(1),) + (None,) * 6
    attn_want = (Replicate(),) + (None,) * 6
    for block in model.layers.values():
        parallelize_module(block, tp_mesh, {
            "attention_norm": SequenceParallel(),
            "attention": PrepareModuleInput(input_layouts=attn_in, desired_input_layouts=attn_want),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
            "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
            "feed_forward.w3": ColwiseParallel(),
        })


# -- activation checkpointing ------------------------------------------------------------------
def _save_ops() -> set:
    """Outputs kept by selective checkpointing: the matmuls of the linear layers, and attention itself."""
    aten = torch.ops.aten
    ops = {aten.mm.default, aten.addmm.default, aten.bmm.default}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"):
        if hasattr(aten, name):
            ops.add(getattr(aten, name).default)
    return ops


def _selective_policy(save_ops, ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in save_ops else CheckpointPolicy.PREFER_RECOMPUTE


def apply_ac(model: nn.Module, mode: str) -> None:
    """Recompute each block's activations in backward: all of them (full) or all but the matmul and
    attention outputs (selective, LLaMA section 2.4). The block keeps its parameter names."""
    if mode == "none":
        return
    if mode not in ("full", "selective"):
        raise UserError(f"parallel.activation_checkpointing must be none, selective or full, not {mode!r}")
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

    context_fn = None
    if mode == "selective":
        policy = functools.partial(_selective_policy, _save_ops())
        context_fn = functools.partial(create_selective_checkpoint_contexts, policy)
    for block in model.layers.values():
        inner = block.forward

        def forward(*a, _inner=inner, **kw):
            extra = {"context_fn": context_fn} if context_fn is not None else {}
            return checkpoint(_inner, *a, use_reentrant=False, **extra, **kw)

        block.forward = forward


def apply_compile(model: nn.Module) -> None:
    """torch.compile each block in place (names unchanged); blocks share one compiled graph."""
    for block in model.layers.values():
        block.compile()


def apply_fsdp(model: nn.Module, dp_mesh, param_dtype: torch.dtype | None, device: torch.device) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else None
    kw = {"mesh": dp_mesh}
    if mp is not None:
        kw["mp_policy"] = mp
    # A model of several transformers (PPO: policy and value) names them in `fsdp_children()`: each
    # child's blocks, then the child itself, become FSDP units, so a child can also run on its own.
    children = model.fsdp_children() if hasattr(model, "fsdp_children") else []
    groups = []
    for child in children:
        groups.append(_shard_blocks(child, kw))
        fully_shard(child, **kw)
    if not children:
        groups.append(_shard_blocks(model, kw))
    fully_shard(model, **kw)
    # Explicit prefetch one block ahead in both directions, so all-gathers overlap compute.
    for blocks in groups:
        for i, block in enumerate(blocks):
            if i + 1 < len(blocks):
                block.set_modules_to_forward_prefetch([blocks[i + 1]])
            if i > 0:
                block.set_modules_to_backward_prefetch([blocks[i - 1]])


def _shard_blocks(model: nn.Module, kw: dict) -> list[nn.Module]:
    from torch.distributed.fsdp import fully_shard

    blocks = list(model.layers.values())
    for i, block in enumerate(blocks):
        # The last block's parameters are needed again at once by backward: keep them gathered.
        fully_shard(block, reshard_after_forward=i < len(blocks) - 1, **kw)
    return blocks


def parallelize(model: nn.Module, info: DistInfo, cfg: ParallelSection, dtype: str) -> nn.Module:
    """TP, then activation checkpointing, then compile, then FSDP2 (torchtitan's order)."""
    if info.tp > 1:
        apply_tp(model, info.mesh["tp"])
    apply_ac(model, cfg.activation_checkpointing)
    if cfg.compile:
        apply_compile(model)
    if info.dp > 1:
        param_dtype = torch.bfloat16 if dtype == "bf16" and info.device.type == "cuda" else None
        apply_fsdp(model, info.mesh["dp_shard"], param_dtype, info.device)
    return model


def loss_context(info: DistInfo) -> contextlib.AbstractContextManager:
    """Cross-entropy on vocabulary-sharded logits (DTensor loss parallel) under tensor parallelism."""
    if info.tp > 1:
        from torch.distributed.tensor.parallel import loss_parallel

        return loss_parallel()
    return contextlib.nullcontext()


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global gradient norm over all shards (DTensor-aware), clipping to max_norm when > 0."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, foreach=True)
    if hasattr(total, "full_tensor"):
        total = total.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
    return total


def local_value(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (replicated) DTensor, e.g. the loss under loss parallel."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over all ranks (tensor-parallel peers hold equal values, so this is the data-parallel mean)."""
    if info.world > 1:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world
    return value


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()
