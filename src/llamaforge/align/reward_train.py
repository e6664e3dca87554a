"""`llamaforge reward train`: a helpfulness or safety reward model on the one Trainer (Llama 2 3.2.2).

Initialised from the chat checkpoint, the LM head replaced by a scalar head; chosen and rejected
answers of a micro-batch go through the model in one batched forward; loss
-log sigmoid(r_c - r_r - m(rating)); one epoch, lr 1e-5, cosine to 10%, warmup 3% (at least 5
steps). Evaluation reports accuracy overall and per rating (Table 8) and the mean score margin.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from llamaforge.align.common import EpochTrain, in_val_split, rank_batches, weighted
from llamaforge.align.reward import (
    RewardModel,
    encode_pair,
    margin_for,
    pad_right,
    ranking_loss,
    reward_model_from_lm,
    save_reward_model,
)
from llamaforge.config import dump_toml
from llamaforge.data.chat import RATINGS, PrefPair, load_pref_pairs, seeded_permutation
from llamaforge.errors import UserError
from llamaforge.io import atomic_write_json, atomic_write_text
from llamaforge.train import parallel as par
from llamaforge.train.config import CheckpointSection, LoggingSection, OptimSection, ParallelSection
from llamaforge.train.trainer import Trainer


@dataclass
class RMSource:
    path: str = ""
    weight: float = 1.0


@dataclass
class RMData:
    path: str | None = None
    sources: list[RMSource] = field(default_factory=list)
    val_fraction: float = 0.1
    epochs: float = 1.0  # the paper: one epoch (longer overfits)
    seed: int = 0


@dataclass
class RMSection:
    kind: Literal["helpfulness", "safety"] = "helpfulness"
    margin: Literal["none", "small", "large"] = "small"
    init: str | None = None  # the chat checkpoint the reward model starts from


@dataclass
class RMOptim(OptimSection):
    warmup_steps: int = -1  # -1 = 3% of the steps, at least 5 (the paper)


@dataclass
class RewardConfig:
    reward: RMSection = field(default_factory=RMSection)
    data: RMData = field(default_factory=RMData)
    train: EpochTrain = field(default_factory=lambda: EpochTrain(batch_size=512, seq_len=4096))
    optim: RMOptim = field(default_factory=lambda: RMOptim(lr=1e-5))
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)


def load_pairs(cfg: RewardConfig) -> tuple[list[PrefPair], list[PrefPair]]:
    if cfg.data.path and cfg.data.sources:
        raise UserError("give either data.path or data.sources, not both")
    sources = cfg.data.sources or ([RMSource(cfg.data.path)] if cfg.data.path else [])
    if not sources:
        raise UserError("no preference data: pass --data.path FILE.jsonl or set data.sources")
    rng = random.Random(cfg.data.seed)
    train: list[PrefPair] = []
    val: list[PrefPair] = []
    for src in sources:
        pairs = load_pref_pairs(src.path)
        tr = [p for p in pairs if not in_val_split(p.where, cfg.data.val_fraction, cfg.data.seed)]
        val += [p for p in pairs if in_val_split(p.where, cfg.data.val_fraction, cfg.data.seed)]
        train += weighted(tr, src.weight, rng, src.path)
    if not train:
        raise UserError("no training pairs left after the validation split")
    return train, val


def encode_pairs(pairs: list[PrefPair], tok, seq_len: int, table: str) -> list[dict[str, Any]]:
    return [{"chosen": encode_pair(tok, p.messages, p.chosen, seq_len),
             "rejected": encode_pair(tok, p.messages, p.rejected, seq_len),
             "margin": margin_for(p.rating, table, p.margin), "rating": RATINGS.index(p.rating)} for p in pairs]


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, right-padded to one width: one forward for both."""
    tokens, real = pad_right([x["chosen"] for x in items] + [x["rejected"] for x in items])
    return {"tokens": tokens, "real": real, "margin": torch.tensor([x["margin"] for x in items]),
            "rating": torch.tensor([x["rating"] for x in items])}


class PairBatches:
    """Seeded shuffled pairs for `epochs`; this rank's `micro` pairs per call; global position saved."""

    def __init__(self, items: list[dict[str, Any]], micro: int, epochs: float, seed: int, rank: int, world: int,
                 limit: int):
        self.items, self.micro, self.epochs, self.seed = items, micro, epochs, seed
        self.rank, self.world, self.limit, self.position = rank, world, limit, 0

    def _item(self, g: int) -> dict[str, Any]:
        epoch, i = divmod(g, len(self.items))
        return self.items[seeded_permutation(len(self.items), self.seed * 7_919 + epoch)[i]]

    def __iter__(self) -> PairBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.position + self.micro * self.world > self.limit:
            raise StopIteration("data exhausted")
        start = self.position + self.rank * self.micro
        self.position += self.micro * self.world
        return collate_pairs([self._item(g) for g in range(start, start + self.micro)])

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "n": len(self.items)}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        if st["n"] != len(self.items):
            raise UserError("the preference data changed since the checkpoint; resume with the same data")
        self.position = int(st["position"])


def pair_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    scores = model(batch["tokens"], batch["real"])
    n = batch["margin"].shape[0]
    rc, rr = scores[:n], scores[n:]
    loss = ranking_loss(rc, rr, batch["margin"].to(rc.dtype))
    d = (rc - rr).detach()
    return loss, {"accuracy": float((d > 0).float().mean()), "score_margin": float(d.mean())}


@torch.no_grad()
def pair_stats(model: torch.nn.Module, items: list[dict[str, Any]], micro: int, device, rank: int = 0,
               world: int = 1) -> torch.Tensor:
    """[correct per rating (4), pairs per rating (4), sum of score margins] over this rank's share of `items`."""
    st = torch.zeros(2 * len(RATINGS) + 1, dtype=torch.float64)
    for chunk, pad in rank_batches(items, micro, rank, world):
        b = collate_pairs(chunk)
        s = model(b["tokens"].to(device), b["real"].to(device)).float().cpu()
        if pad:
            continue
        n = b["margin"].shape[0]
        diff = (s[:n] - s[n:]).double()
        for d, r in zip(diff.tolist(), b["rating"].tolist()):
            st[r] += float(d > 0)
            st[len(RATINGS) + r] += 1
        st[-1] += diff.sum()
    return st


def summarize(st: torch.Tensor) -> dict[str, Any]:
    """Accuracy overall and per rating (None where a rating has no pairs), mean score margin."""
    k = len(RATINGS)
    correct, count = st[:k].tolist(), st[k:2 * k].tolist()
    total = sum(count)
    return {"pairs": int(total), "accuracy": sum(correct) / max(total, 1),
            "accuracy_by_rating": {r: (c / n if n else None) for r, c, n in zip(RATINGS, correct, count)},
            "count_by_rating": {r: int(n) for r, n in zip(RATINGS, count)},
            "mean_score_margin": float(st[-1]) / max(total, 1)}


def evaluate_pairs(model: torch.nn.Module, items: list[dict[str, Any]], micro: int, device,
                   info: par.DistInfo | None = None) -> dict[str, Any]:
    """Held-out evaluation; under data parallelism each rank scores its share and the counts are summed."""
    st = pair_stats(model, items, micro, device, info.dp_rank if info else 0, info.dp if info else 1)
    if info is not None and info.world > 1:
        t = st.to(info.device)
        torch.distributed.all_reduce(t)
        st = t.cpu() / info.tp  # tensor-parallel peers count the same pairs
    return summarize(st)


def plot_accuracy(ev: dict[str, Any], path: Path, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in RATINGS if ev["accuracy_by_rating"][r] is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r.replace("_", "\n") for r in rs], [100 * ev["accuracy_by_rating"][r] for r in rs], color="#4477aa")
    ax.axhline(50, color="grey", ls="--", lw=1)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{kind} reward model: accuracy by rating (Llama 2 Table 8)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def run(cfg: RewardConfig, out: str | Path) -> dict[str, Any]:
    from llamaforge.checkpoint import find_tokenizer, load_model

    out = Path(out)
    if not cfg.reward.init:
        raise UserError("pass --init CHECKPOINT (the chat model the reward model starts from)")
    tok = find_tokenizer(cfg.reward.init)
    if tok is None:
        raise UserError(f"{cfg.reward.init} has no tokenizer.model")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info = par.init_distributed(cfg.parallel, cfg.train.device)
    try:
        if info.tp > 1:
            raise UserError("reward models train with data parallelism (parallel.dp_shard); parallel.tp must be 1")
        train_p, val_p = load_pairs(cfg)
        items = encode_pairs(train_p, tok, cfg.train.seq_len, cfg.reward.margin)
        val_items = encode_pairs(val_p, tok, cfg.train.seq_len, cfg.reward.margin)
        micro, _ = Trainer.layout(cfg, info)
        epoch_steps = int(len(items) * cfg.data.epochs) // cfg.train.batch_size
        if epoch_steps == 0:
            raise UserError(f"{len(items)} pairs x {cfg.data.epochs} epochs is less than one batch of "
                            f"train.batch_size {cfg.train.batch_size}; lower the batch size")
        cfg.train.steps = min(cfg.train.steps, epoch_steps) if cfg.train.steps else epoch_steps
        if cfg.optim.warmup_steps < 0:
            cfg.optim.warmup_steps = min(cfg.train.steps, max(5, round(0.03 * cfg.train.steps)))
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.toml", dump_toml(cfg))
            print(f"reward ({cfg.reward.kind}): {len(items)} train pairs, {len(val_items)} held out, "
                  f"{cfg.train.steps} steps, margin {cfg.reward.margin}")
        torch.manual_seed(cfg.train.seed)
        lm = load_model(cfg.reward.init)
        rm: RewardModel = reward_model_from_lm(lm)
        args = rm.args
        def eval_fn(model: torch.nn.Module) -> dict[str, float]:
            ev = evaluate_pairs(model, val_items, micro, info.device, info)
            return {"val_accuracy": ev["accuracy"], "val_score_margin": ev["mean_score_margin"]}

        def final_fn(sd: dict[str, torch.Tensor], path: Path) -> None:
            head = {k: v for k, v in sd.items() if k.startswith("score_head.")}
            body = {k.removeprefix("backbone."): v.contiguous() for k, v in sd.items() if k.startswith("backbone.")}
            from llamaforge.checkpoint.native import save_native

            save_native(body, path, tokenizer=tok, kind="reward", extra_tensors=head, args=args,
                        metadata={"trained_by": "llamaforge reward train", "reward_kind": cfg.reward.kind,
                                  "margin": cfg.reward.margin, "init": str(cfg.reward.init)})

        batches = PairBatches(items, micro, cfg.data.epochs, cfg.data.seed, info.dp_rank, info.dp,
                              limit=cfg.train.steps * cfg.train.batch_size)
        trainer = Trainer(rm, pair_loss, batches, cfg, out, info, eval_fn=eval_fn if val_items else None,
                          final_fn=final_fn, command="reward train",
                          inputs=[cfg.reward.init] + [s.path for s in cfg.data.sources]
                          + ([cfg.data.path] if cfg.data.path else []),
                          manifest_extra={"reward_kind": cfg.reward.kind, "margin": cfg.reward.margin,
                                          "train_pairs": len(items), "val_pairs": len(val_items)})
        summary = trainer.fit()
        if val_items:
            trainer.model.eval()
            ev = evaluate_pairs(trainer.model, val_items, micro, info.device, info)
            ev["kind"], ev["step"], ev["margin_table"] = cfg.reward.kind, summary["steps"], cfg.reward.margin
            if info.is_main:
                atomic_write_json(out / "eval.json", ev)
                plot_accuracy(ev, out / "plots" / "accuracy_by_rating.png", cfg.reward.kind)
            summary["eval"] = ev
        return summary
    finally:
        if info.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def save_untrained(init: str, out: str | Path) -> Path:
    """A reward model with a fresh head on `init`'s backbone (for tests and baselines)."""
    from llamaforge.checkpoint import find_tokenizer, load_model

    return save_reward_model(reward_model_from_lm(load_model(init)), out, tokenizer=find_tokenizer(init))
