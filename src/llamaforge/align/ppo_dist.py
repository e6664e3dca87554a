"""PPO under torchrun with FSDP2: what each rank does, and what crosses ranks.

The Trainer shards the policy and the value model (train/parallel.py: each one's blocks, then each
one, then `PPOModel`, are FSDP units). One iteration on `dp` ranks:

- generation: the policy's full weights are gathered ONCE for the phase
  (`get_model_state_dict(..., full_state_dict=True)`) into a plain unsharded replica, which the
  KV-cache generator (`generate_ids`) uses for every token; the replica is dropped after the phase.
  Running the decoder on the sharded policy would all-gather every block at every token (Llama 2
  reports a 20x slowdown from that), and ranks whose rows stop early would desynchronise.
- each rank generates, scores (reference, reward models, values) its contiguous share of the
  iteration's prompts; row i keeps the sampling seed it has in one process;
- the scored rows (ids, masks, log-probs, values, raw scores: a few MB) are all-gathered, so every
  rank whitens rewards, runs GAE and whitens advantages on the whole iteration: the running reward
  moments and every statistic are identical on all ranks and equal to one process's;
- training: each optimizer step's minibatch is the one a single process would use, split into the
  same micro-batches; each rank runs its share of them and FSDP averages the gradients.

The reference and reward models are frozen and run forward only. By default
(`ppo.shard_frozen = true`) they are FSDP-sharded over the same ranks as the policy: each holds
1/dp of them, and their blocks are all-gathered per forward (once per scoring micro-batch), which
is what 70B needs (docs/guide/rlhf_scale.md). `ppo.shard_frozen = false` keeps a full copy on
every rank instead (no communication; fine when three extra copies fit, e.g. small models).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from llamaforge.train.parallel import DistInfo


class DistComm:
    """The cross-rank steps of `Rollouts` (align/ppo.py) on `info.dp` data-parallel ranks."""

    def __init__(self, info: DistInfo, batch_size: int, compute_dtype: torch.dtype | None = None,
                 gather: bool = True):
        self.info, self.rank, self.world = info, info.dp_rank, info.dp
        self.batch_size, self.compute_dtype, self.gather = batch_size, compute_dtype, gather
        self.timings: list[dict[str, float]] = []  # per generation phase: gather_s, generate_s

    def share(self, n: int) -> tuple[int, int]:
        if n % self.world:
            raise ValueError(f"{n} prompts do not split over {self.world} ranks")
        per = n // self.world
        return self.rank * per, (self.rank + 1) * per

    @contextlib.contextmanager
    def generator(self, policy: nn.Module) -> Iterator[nn.Module]:
        """The policy for one generation phase: its full weights gathered once into a plain replica."""
        t0 = time.perf_counter()
        model = gathered_replica(policy, self.info.device, self.compute_dtype) if self.gather else policy
        t1 = time.perf_counter()
        try:
            yield model
        finally:
            del model
            self.timings.append({"gather_s": t1 - t0, "generate_s": time.perf_counter() - t1})

    def gather_rows(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's rows, in rank order (= prompt order), right-padded with 0 to the widest."""
        out = {}
        for k, t in rows.items():
            t = t.to(self.info.device)
            if t.dim() == 2:
                width = torch.tensor([t.shape[1]], device=t.device)
                dist.all_reduce(width, op=dist.ReduceOp.MAX)
                t = torch.nn.functional.pad(t, (0, int(width) - t.shape[1]))
            parts = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(parts, t.contiguous())
            out[k] = torch.cat(parts)
        return out

    def serve(self, order: list[int], micro: int) -> list[int]:
        """This rank's micro-batches: minibatch j is order[j*B:(j+1)*B] as in one process, cut into
        micro-batches of `micro` rows; rank r takes the r-th run of `accum` of them."""
        groups = self.batch_size // micro
        accum = groups // self.world
        out: list[int] = []
        for g in range(len(order) // micro):
            if (g % groups) // accum == self.rank:
                out += order[g * micro:(g + 1) * micro]
        return out

    def all_gather_objects(self, items: list[Any]) -> list[Any]:
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, items)
        return [x for p in parts for x in p]


def gathered_replica(policy: nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """A plain, unsharded copy of an FSDP-sharded Transformer (every rank must call this).

    One all-gather per tensor, each shard cast to `dtype` (the compute dtype) before it is gathered,
    so the only transient is one full tensor. (DCP's `get_model_state_dict(full_state_dict=True)`
    gives the same tensors but holds the whole fp32 state dict at once: 4 more bytes per parameter.)
    The replica shares nothing with the sharded model, so the decoder never triggers FSDP hooks.
    """
    from torch.distributed.tensor import DTensor

    from llamaforge.model.llama import Transformer

    with torch.device("meta"):
        replica = Transformer(policy.args)
    sd = {}
    for name, t in policy.state_dict().items():
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        sd[name] = (t.full_tensor() if isinstance(t, DTensor) else t).to(device)
    replica.load_state_dict(sd, assign=True)
    replica.reset_rope(device)
    replica.requires_grad_(False)
    return replica.eval()


def shard_frozen(module: nn.Module, info: DistInfo) -> nn.Module:
    """FSDP-shard a frozen transformer (reference or reward model) over the data-parallel ranks."""
    from torch.distributed.fsdp import fully_shard

    mesh = info.mesh["dp_shard"]
    for block in module.layers.values():
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def evaluate_dist(policy: nn.Module, comm: DistComm, tok, reward, records: list[dict], max_new_tokens: int,
                  seed: int) -> dict[str, Any]:
    """rejection_sampling.evaluate on dp ranks: each generates its share of the held-out prompts
    greedily with the gathered replica; every rank scores all answers, so all return the same."""
    from llamaforge.align.world_eval import record_dialogue, score_answers
    from llamaforge.generate import generate

    n = len(records)
    per = -(-n // comm.world)
    mine = records[comm.rank * per:(comm.rank + 1) * per]
    prompts = [record_dialogue(r) for r in records]
    with comm.generator(policy) as model:
        local = [a.strip() for a in generate(model, tok, prompts[comm.rank * per:(comm.rank + 1) * per],
                                             max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)] \
            if mine else []
    answers = comm.all_gather_objects(local)
    s = reward.score(records, prompts, answers)
    out: dict[str, Any] = {"eval_reward": float(s["score"].mean())}
    if any("category" in r for r in records):
        out.update({k: v for k, v in score_answers(records, answers).items() if k != "n"})
    return out
