"""PPO for Llama 2-Chat (3.2.3) on the one Trainer: rollouts, GAE, clipped policy and value losses.

`PPOModel` holds the policy (a Transformer) and the value model (a reward-model-shaped network with
a per-token head); the Trainer optimises both. `Rollouts` is the Trainer's batch iterator: when its
buffer is empty it samples answers with the current policy (batched KV-cache generation), scores
them with the combined reward, computes per-token KL against the frozen reference, advantages
with GAE, and then serves the buffer as micro-batches (one optimizer step per minibatch).
Under torchrun, `comm` (align/ppo_dist.py) splits the prompts over ranks, gathers the policy once
per generation phase and exchanges the scored rows; `Local` is the one-process identity.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llamaforge.align.rewards import CombinedReward, RunningMoments, token_rewards
from llamaforge.data.chat import seeded_permutation


# -- the math (unit-tested against hand computations) ----------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over [B, N] (mask 1 on response tokens, contiguous).

    delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1} * m_{t+1}.
    Returns (advantages, returns = advantages + values), zero outside the mask.
    """
    n = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    next_v = torch.zeros_like(rewards[:, 0])
    next_a = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(n)):
        m_next = mask[:, t + 1] if t + 1 < n else torch.zeros_like(mask[:, 0])
        delta = rewards[:, t] + gamma * next_v * m_next - values[:, t]
        next_a = delta + gamma * lam * next_a * m_next
        adv[:, t] = next_a
        next_v = values[:, t]
    adv = adv * mask
    return adv, (adv + values) * mask


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate: mean of max(-A r, -A clip(r, 1 - c, 1 + c)); and the clipped fraction."""
    ratio = torch.exp(logp - old_logp)
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    return masked_mean(loss, mask), masked_mean(((ratio - 1).abs() > clip).float(), mask)


def value_loss(v: torch.Tensor, old_v: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss: 0.5 * mean of max((v - R)^2, (old_v + clip(v - old_v, -c, c) - R)^2)."""
    v_clipped = old_v + (v - old_v).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((v - returns) ** 2, (v_clipped - returns) ** 2), mask)


# -- the model the Trainer optimises -----------------------------------------------------------------
class PPOModel(nn.Module):
    def __init__(self, policy: nn.Module, value: nn.Module):
        super().__init__()
        self.policy, self.value = policy, value
        self.args = policy.args

    @property
    def layers(self) -> nn.ModuleDict:
        """Policy and value blocks, where train/parallel.py applies checkpointing, compile and FSDP."""
        blocks = {f"policy_{k}": b for k, b in self.policy.layers.items()}
        blocks.update({f"value_{k}": b for k, b in self.value.layers.items()})
        return nn.ModuleDict(blocks)

    def fsdp_children(self) -> list[nn.Module]:
        """FSDP units of their own (train/parallel.py): the policy alone is gathered for generation."""
        return [self.policy, self.value]

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy logits [B, L, V], values [B, L]) for right-padded prompt+response ids."""
        return self.policy(ids), self.value.values(ids)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t + 1] | ids[:, :t + 1]) for t < L - 1: [B, L - 1]."""
    return torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def ppo_loss_fn(clip: float = 0.2, vf_coef: float = 0.1, mean_over_ranks=None):
    """mean_over_ranks(tensor) -> tensor: under torchrun, the logged metrics are averaged over the
    ranks' micro-batches (the Trainer averages only the loss), so they equal one process's."""

    def loss_fn(model: PPOModel, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        logits, values = model(batch["ids"])
        logp = token_logprobs(logits, batch["ids"])
        m = batch["mask"]
        pl, clipfrac = policy_loss(logp, batch["old_logp"], batch["adv"], m, clip)
        vl = value_loss(values[:, :-1], batch["old_values"], batch["returns"], m, clip)
        with torch.no_grad():
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            entropy = masked_mean(-(lp.exp() * lp).sum(-1), m)
            approx_kl = masked_mean(0.5 * (logp - batch["old_logp"]) ** 2, m)
        names = ("policy_loss", "value_loss", "clipfrac", "entropy", "approx_kl")
        vals = torch.stack([pl.detach(), vl.detach(), clipfrac, entropy, approx_kl]).float()
        if mean_over_ranks is not None:
            vals = mean_over_ranks(vals)
        metrics = {**dict(zip(names, vals.tolist())), **batch.get("stats", {})}
        return pl + vf_coef * vl, metrics

    return loss_fn


# -- rollouts: the Trainer's batch iterator ----------------------------------------------------------
@dataclass
class RolloutConfig:
    prompts_per_iteration: int = 512
    micro: int = 8  # rows per micro-batch served to the Trainer
    ppo_epochs: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.01
    gamma: float = 1.0
    lam: float = 0.95
    seed: int = 0
    iterations: int = 200
    patience: int = 0  # early stop after this many evals without a better eval_reward (0 = never)
    gen_batch: int = 64  # rollouts decoded at once per rank (the KV cache's rows)


class Local:
    """The one-process case of align/ppo_dist.py's `DistComm`: every rank-facing step is the identity."""

    rank, world = 0, 1

    def share(self, n: int) -> tuple[int, int]:
        return 0, n

    def generator(self, policy: nn.Module) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext(policy)

    def gather_rows(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return rows

    def serve(self, order: list[int], micro: int) -> list[int]:
        return order


class Rollouts:
    def __init__(self, model: PPOModel, ref: nn.Module, reward: CombinedReward, tokenizer,
                 records: list[dict[str, Any]], prompts: list[Any], cfg: RolloutConfig, comm: Any = None):
        from llamaforge.generate import encode_prompt

        self.model, self.ref, self.reward, self.tok, self.cfg = model, ref, reward, tokenizer, cfg
        self.comm = comm or Local()
        self.records, self.prompts = records, prompts
        self.prompt_ids = [encode_prompt(tokenizer, p)[0] for p in prompts]
        self.whitener = RunningMoments()
        self.iteration = 0  # rollouts made so far
        self.buffer: dict[str, torch.Tensor] | None = None
        self.order: list[int] = []
        self.eval_history: list[float] = []
        self.last_stats: dict[str, float] = {}

    def _prompt_indices(self, it: int) -> list[int]:
        n, k = len(self.prompts), self.cfg.prompts_per_iteration
        out = []
        g = it * k
        while len(out) < k:
            epoch, i = divmod(g, n)
            out.append(seeded_permutation(n, self.cfg.seed * 104_729 + epoch)[i])
            g += 1
        return out

    @torch.no_grad()
    def _local_rows(self, idx: list[int], lo: int) -> dict[str, torch.Tensor]:
        """Generate, score and evaluate this rank's prompts (global rows lo, lo + 1, ...)."""
        from llamaforge.generate import generate_ids

        cfg, it = self.cfg, self.iteration
        prompts = [self.prompt_ids[i] for i in idx]
        with self.comm.generator(self.model.policy) as gen_model:  # under FSDP: the policy gathered once
            gen = generate_ids(gen_model, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                               top_p=cfg.top_p, stop_ids=[self.tok.eos_id], max_batch=cfg.gen_batch,
                               seed=cfg.seed * 1_000_003 + it * 9_973 + lo)  # row i's seed: the same on any world
        ids, attn, resp = gen.concat(prompts)
        dev = next(self.model.parameters()).device
        ids, attn, resp = ids.to(dev), attn.to(dev), resp.to(dev)
        logp, ref_logp, values = (torch.zeros(ids.shape[0], ids.shape[1] - 1, device=dev) for _ in range(3))
        for a in range(0, ids.shape[0], cfg.micro):  # micro-batches, each trimmed to its longest row
            w = int(attn[a:a + cfg.micro].sum(1).max())
            x = ids[a:a + cfg.micro, :w]
            logits, v = self.model(x)  # through the FSDP root when sharded
            logp[a:a + cfg.micro, :w - 1] = token_logprobs(logits, x)
            del logits
            ref_logp[a:a + cfg.micro, :w - 1] = token_logprobs(self.ref(x), x)
            values[a:a + cfg.micro, :w - 1] = v[:, :-1]
        answers = [self.tok.decode(gen.row(i)).strip() for i in range(len(idx))]
        scored = self.reward.score([self.records[i] for i in idx], [self.prompts[i] for i in idx], answers)
        rows = {"ids": ids, "mask": resp[:, 1:].float(), "logp": logp, "ref_logp": ref_logp,
                "values": values, "raw": scored["score"], "length": gen.lengths.float()}
        if "took_safety" in scored:
            rows["took_safety"] = scored["took_safety"]
        return rows

    @torch.no_grad()
    def make_rollouts(self) -> None:
        cfg, it = self.cfg, self.iteration
        idx = self._prompt_indices(it)
        lo, hi = self.comm.share(len(idx))
        was = self.model.training
        self.model.eval()
        # Every rank ends with the whole iteration in prompt order, so the reward whitening, GAE and
        # advantage whitening below see exactly what one process sees.
        rows = self.comm.gather_rows(self._local_rows(idx[lo:hi], lo))
        ids, mask, logp, ref_logp = rows["ids"], rows["mask"], rows["logp"], rows["ref_logp"]
        values, raw = rows["values"], rows["raw"].cpu()
        dev = ids.device
        self.whitener.update(raw)
        score = self.whitener.whiten(raw).to(dev)
        rewards, kl = token_rewards(score, logp, ref_logp, mask, cfg.beta)
        adv, returns = gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)
        adv = masked_whiten(adv, mask)
        self.model.train(was)
        self.buffer = {"ids": ids, "mask": mask, "old_logp": logp * mask, "old_values": values * mask,
                       "adv": adv, "returns": returns}
        self.last_stats = {"reward": float(raw.mean()), "kl": float(kl.mean()),
                           "response_length": float(rows["length"].mean()), "iteration": it + 1}
        if getattr(self.comm, "timings", None):  # seconds of the last generation phase (under torchrun)
            self.last_stats.update({f"gen_{k}": v for k, v in self.comm.timings[-1].items()})
        if "took_safety" in rows:
            self.last_stats["safety_gated"] = float(rows["took_safety"].float().mean())
        order: list[int] = []
        for e in range(cfg.ppo_epochs):
            perm = list(range(len(idx)))
            random.Random(cfg.seed * 7 + it * 31 + e).shuffle(perm)
            order += perm
        self.order = self.comm.serve(order, cfg.micro)  # this rank's micro-batches of each minibatch
        self.iteration += 1

    def steps_per_iteration(self, batch_size: int) -> int:
        return self.cfg.prompts_per_iteration * self.cfg.ppo_epochs // batch_size

    def __iter__(self) -> Rollouts:
        return self

    def __next__(self) -> dict[str, Any]:
        if not self.order:
            if self.iteration >= self.cfg.iterations:
                raise StopIteration(f"reached {self.cfg.iterations} PPO iterations")
            if self.cfg.patience and len(self.eval_history) > self.cfg.patience:
                best_before = max(self.eval_history[: -self.cfg.patience])
                if max(self.eval_history[-self.cfg.patience:]) <= best_before:
                    raise StopIteration(f"early stop: eval_reward has not improved for {self.cfg.patience} evals")
            self.make_rollouts()
        take, self.order = self.order[: self.cfg.micro], self.order[self.cfg.micro:]
        batch: dict[str, Any] = {k: v[take] for k, v in self.buffer.items()}
        # Trim right padding shared by the whole micro-batch.
        width = int(batch["mask"].sum(0).nonzero().max()) + 2 if batch["mask"].any() else batch["ids"].shape[1]
        batch = {k: (v[:, :width] if k == "ids" else v[:, : width - 1]) for k, v in batch.items()}
        batch["tokens"] = batch["ids"]  # for the Trainer's tokens/s
        batch["stats"] = dict(self.last_stats)
        return batch

    def state_dict(self) -> dict[str, Any]:
        if self.order:
            raise RuntimeError("PPO checkpoints are taken between rollouts (checkpoint.every must be a multiple "
                               "of the optimizer steps per iteration)")
        return {"iteration": self.iteration, "whitener": self.whitener.state_dict(),
                "eval_history": self.eval_history}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.iteration = int(st["iteration"])
        self.whitener.load_state_dict(st["whitener"])
        self.eval_history = list(st.get("eval_history", []))
        self.buffer, self.order = None, []
