"""Reward models (Llama 2 3.2.2): the Transformer backbone with a scalar head instead of the LM head.

The score is read at the last real token of prompt + answer, whichever side the padding is on.
Loss: -log sigmoid(r_chosen - r_rejected - m(rating)), with the paper's margin tables (Table 27).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llamaforge.checkpoint.common import assign_state_dict
from llamaforge.checkpoint.native import read_config, read_tensors, save_native
from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.model.llama import Transformer

MARGINS: dict[str, dict[str, float]] = {
    "none": {"significantly_better": 0.0, "better": 0.0, "slightly_better": 0.0, "negligibly_better": 0.0},
    "small": {"significantly_better": 1.0, "better": 2 / 3, "slightly_better": 1 / 3, "negligibly_better": 0.0},
    "large": {"significantly_better": 3.0, "better": 2.0, "slightly_better": 1.0, "negligibly_better": 0.0},
}


def margin_for(rating: str, table: str = "small", explicit: float | None = None) -> float:
    """m(rating) from a table; a record's own `margin` wins when given."""
    if explicit is not None:
        return float(explicit)
    if table not in MARGINS:
        raise UserError(f"margin table {table!r} unknown; use none, small or large")
    return MARGINS[table][rating]


def ranking_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
                 ) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected - margin) (Llama 2, eq. 2)."""
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


def positions_and_mask(real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From a [B, T] bool mask of real tokens: per-token positions and a [B, 1, T, T] attention mask.

    Positions count real tokens only, so left padding does not shift the rotary phases; padding
    keys are hidden and padding queries see only themselves (no NaN rows).
    """
    pos = (real.long().cumsum(1) - 1).clamp(min=0)
    t = real.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=real.device).tril()
    mask = causal & real.unsqueeze(1)
    mask = mask | torch.eye(t, dtype=torch.bool, device=real.device)
    return pos, mask.unsqueeze(1)


def last_real_index(real: torch.Tensor) -> torch.Tensor:
    """Index of the last True of each row of a [B, T] mask (works for left and right padding)."""
    t = real.shape[1]
    return (t - 1) - real.flip(1).long().argmax(1)


class RewardModel(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.backbone = Transformer(args)
        del self.backbone.output  # the next-token head is replaced by the scalar head
        self.score_head = nn.Linear(args.dim, 1)

    @property
    def layers(self) -> nn.ModuleDict:
        """The backbone's blocks, where train/parallel.py applies checkpointing, compile and FSDP."""
        return self.backbone.layers

    def forward(self, tokens: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, T] (+ mask of real tokens [B, T]) -> scores [B] at the last real token."""
        if real is None:
            h = self.backbone(tokens, return_hidden=True)
            idx = torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device)
        else:
            pos, mask = positions_and_mask(real)
            h = self.backbone(tokens, input_pos=pos, mask=mask, return_hidden=True)
            idx = last_real_index(real)
        last = h[torch.arange(tokens.shape[0], device=tokens.device), idx]
        return self.score_head(last).squeeze(-1).float()

    def values(self, tokens: torch.Tensor) -> torch.Tensor:
        """The head at every position [B, T] (a value function for PPO; right-padded input)."""
        return self.score_head(self.backbone(tokens, return_hidden=True)).squeeze(-1).float()

    @torch.no_grad()
    def score(self, prompts: Sequence[str | list[dict]], answers: Sequence[str], tokenizer=None,
              batch_size: int = 16) -> torch.Tensor:
        """Scores of answers to prompts (strings or chat message lists), in the Llama 2 chat format."""
        tok = tokenizer or getattr(self, "tokenizer", None)
        if tok is None:
            raise UserError("RewardModel.score needs a tokenizer (none was stored with the checkpoint)")
        if len(prompts) != len(answers):
            raise UserError(f"{len(prompts)} prompts but {len(answers)} answers")
        was_training = self.training
        self.eval()
        seqs = [encode_pair(tok, p, a, self.args.max_seq_len) for p, a in zip(prompts, answers)]
        out = []
        device = next(self.parameters()).device
        for i in range(0, len(seqs), batch_size):
            tokens, real = pad_right(seqs[i: i + batch_size], device=device)
            out.append(self(tokens, real).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)


def as_messages(prompt: str | list[dict]) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def encode_pair(tok, prompt: str | list[dict], answer: str, max_len: int) -> list[int]:
    """Prompt + answer in the chat format, cut from the left to max_len (the answer end is kept).

    Same ids as encode_dialog(prompt + [answer]); an empty answer (a policy may emit eos at once) is allowed.
    """
    ids = tok.encode_chat_prompt(as_messages(prompt)) + tok.encode(f"{answer.strip()} ", bos=False, eos=True)
    return ids[-max_len:]


def pad_right(seqs: list[list[int]], pad_id: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    real = torch.zeros((len(seqs), n), dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
        real[i, : len(s)] = True
    return tokens.to(device), real.to(device)


def reward_model_from_lm(lm: Transformer) -> RewardModel:
    """Initialise a reward model from a (chat) language model: same backbone, fresh scalar head.

    The head starts small (std 1/sqrt(d)) with zero bias, so initial scores are near 0.
    """
    rm = RewardModel.__new__(RewardModel)
    nn.Module.__init__(rm)
    rm.args = lm.args
    rm.backbone = lm
    if hasattr(lm, "output"):
        del rm.backbone.output
    rm.score_head = nn.Linear(lm.args.dim, 1, device=lm.tok_embeddings.weight.device)
    nn.init.normal_(rm.score_head.weight, std=lm.args.dim ** -0.5)
    nn.init.zeros_(rm.score_head.bias)
    return rm


def save_reward_model(rm: RewardModel, path: str | Path, tokenizer: Any = None, metadata: dict | None = None) -> Path:
    sd = {k: v for k, v in rm.backbone.state_dict().items()}
    head = {f"score_head.{k}": v for k, v in rm.score_head.state_dict().items()}
    return save_native(sd, path, tokenizer=tokenizer, kind="reward", extra_tensors=head, metadata=metadata,
                       args=rm.args)


def load_reward_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
                      ) -> RewardModel:
    cfg = read_config(path)
    if cfg.get("kind") != "reward":
        raise UserError(f"{path} is a {cfg.get('kind', 'lm')!r} checkpoint, not a reward model; "
                        "train one with `llamaforge reward train`")
    args = ModelArgs.from_dict(cfg["model_args"])
    with torch.device("meta"):
        rm = RewardModel(args)
    sd = read_tensors(path, device)
    head = {k.removeprefix("score_head."): sd.pop(k) for k in list(sd) if k.startswith("score_head.")}
    assign_state_dict(rm.backbone, sd, Path(path), device, dtype)
    if set(head) != {"weight", "bias"}:
        raise UserError(f"{path}: tensors score_head.weight and score_head.bias are required")
    rm.score_head.load_state_dict({k: v.to(device=device, dtype=dtype or v.dtype) for k, v in head.items()},
                                  assign=True)
    tok_file = Path(path) / "tokenizer.model"
    if tok_file.is_file():
        from llamaforge.tokenizer import Tokenizer

        rm.tokenizer = Tokenizer(tok_file)
    return rm
