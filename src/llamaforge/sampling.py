"""Sampling from the model: per-row sampling parameters, the decode step, the slot KV cache, and
the incremental detokenization that applies stop strings.

Every row of a batch has its own temperature, top-p, top-k and random stream, so requests with
different settings decode together and a seeded row gives the same tokens whatever else is in
the batch. The random numbers of a row (one uniform per token) are drawn from its own
`torch.Generator` when it joins, so the decode step itself has no Python-side randomness and
can be compiled with `torch.compile(fullgraph=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llamaforge.errors import UserError
from llamaforge.model.cache import KVCache

TOP_P_CANDIDATES = 1024  # nucleus is searched among the most likely tokens (see filter_probs)


@dataclass
class SamplingParams:
    """How one row is sampled. temperature 0 is greedy; top_k 0 and top_p 1 disable filtering."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)  # stop strings (need a tokenizer)
    stop_ids: list[int] | None = None  # None: the tokenizer's eos; [] never stops on a token
    seed: int | None = None
    logprobs: bool = False

    def validate(self, where: str = "sampling") -> SamplingParams:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise UserError(f"{where}: max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise UserError(f"{where}: temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"{where}: top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise UserError(f"{where}: top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise UserError(f"{where}: stop strings must be non-empty strings, got {self.stop!r}")
        return self


@dataclass
class Event:
    """One generated token of one row. `text` is the new text (held back while it could still be
    part of a stop string or an incomplete UTF-8 character); `finish` is None, "stop" or "length"."""

    rid: Any
    token: int
    logprob: float | None
    text: str
    finish: str | None


@dataclass
class Row:
    rid: Any
    prompt: list[int]
    params: SamplingParams
    stop_ids: frozenset
    text: TextStream | None
    pos: int = 0  # position where the last sampled token will be written
    tokens: list[int] = field(default_factory=list)


class SlotCache(KVCache):
    """A KVCache whose batch rows are slots of a running batch.

    A forward touches the contiguous slots [start, start + n) (n is the forward's batch size)
    and attends over the first `live` positions only, so a step costs what the longest active
    row needs rather than max_len. `prefill=True` writes positions 0..T-1 with one slice copy.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start, self.live, self.prefill = 0, self.max_len, False
        self.register_buffer("rows", torch.arange(self.batch_size, device=self.k.device).unsqueeze(1),
                             persistent=False)

    def update(self, layer: int, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        n, t = k.shape[0], k.shape[2]
        kc = self.k[layer, self.start:self.start + n]
        vc = self.v[layer, self.start:self.start + n]
        if self.prefill:
            kc[:, :, :t] = k.to(kc.dtype)
            vc[:, :, :t] = v.to(vc.dtype)
        else:
            b = self.rows[:n]
            kc[b, :, input_pos] = k.transpose(1, 2).to(kc.dtype)
            vc[b, :, input_pos] = v.transpose(1, 2).to(vc.dtype)
        return kc[:, :, :self.live], vc[:, :, :self.live]

    def causal_mask(self, input_pos: torch.Tensor) -> torch.Tensor:
        return self.slots[:self.live].view(1, 1, 1, -1) <= input_pos.unsqueeze(1).unsqueeze(-1)

    def move_row(self, src: int, dst: int, length: int) -> None:
        """Copy slot src's first `length` positions into slot dst (compaction of the batch)."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]


def filter_probs(probs: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor, kmax: int,
                 use_top_p: bool) -> torch.Tensor:
    """Zero the probabilities outside each row's top-k set and nucleus (their intersection).

    Thresholds come from `topk` instead of a full sort (a 32000-way sort costs ~2 ms per row on
    a CPU). The nucleus is exact whenever the TOP_P_CANDIDATES most likely tokens hold at least
    top_p of the mass (always, for a trained model at top_p <= 0.95); for flatter rows no
    nucleus cut is applied.
    """
    vocab = probs.shape[-1]
    k = min(vocab, max(kmax, TOP_P_CANDIDATES if use_top_p else 1))
    vals = probs.topk(k, dim=-1).values  # descending
    thr = torch.zeros_like(probs[:, :1])
    if kmax > 0:
        kth = vals.gather(-1, (top_k.clamp(1, k) - 1).unsqueeze(-1))
        thr = torch.where(top_k.unsqueeze(-1) > 0, kth, thr)
    if use_top_p:
        cum = vals.cumsum(-1)
        p = top_p.unsqueeze(-1).to(cum.dtype)
        j = torch.searchsorted(cum, p).clamp(max=k - 1)
        covered = (cum[:, -1:] >= p) & (p < 1)
        thr = torch.maximum(thr, torch.where(covered, vals.gather(-1, j), torch.zeros_like(thr)))
    return probs * (probs >= thr)


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
           uniform: torch.Tensor | None, kmax: int = 0, use_top_p: bool = False,
           want_logprobs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next token per row from fp32 logits [n, V]; greedy where temperature is 0.

    `uniform` [n] (one U(0,1) draw per row) picks the token by inverting the row's cumulative
    distribution: exact sampling from one random number, no Gumbel noise over the vocabulary.
    Log-probs are those of softmax(logits / temperature) (of the raw logits for greedy rows),
    before top-k/top-p filtering: with top_p=1 and top_k=0 they are the exact sampling log-probs.
    """
    greedy = logits.argmax(-1)
    if uniform is None and not want_logprobs:
        return greedy, None
    t = torch.where(temperature > 0, temperature, torch.ones_like(temperature)).unsqueeze(-1)
    scaled = logits / t
    if uniform is None:
        tok = greedy
    else:
        probs = scaled.softmax(-1)
        if kmax > 0 or use_top_p:
            probs = filter_probs(probs, top_p, top_k, kmax, use_top_p)
        cdf = probs.cumsum(-1)
        x = (uniform.unsqueeze(-1) * cdf[:, -1:]).to(cdf.dtype)
        sampled = torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)
        tok = torch.where(temperature > 0, sampled, greedy)
    logp = scaled.log_softmax(-1).gather(-1, tok.unsqueeze(-1)).squeeze(-1) if want_logprobs else None
    return tok, logp


def decode_step(model: torch.nn.Module, cache: SlotCache, tok: torch.Tensor, pos: torch.Tensor,
                temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
                uniform: torch.Tensor | None, kmax: int = 0, use_top_p: bool = False,
                want_logprobs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One token for each of the first n slots: tok, pos [n] -> (next token [n], log-prob [n])."""
    logits = model(tok.unsqueeze(1), input_pos=pos.unsqueeze(1), cache=cache)[:, -1].float()
    return sample(logits, temperature, top_p, top_k, uniform, kmax, use_top_p, want_logprobs)


class TextStream:
    """Incremental detokenization with stop strings.

    Decodes the whole continuation each time (SentencePiece merges byte pieces and spaces), after
    `prefix_id` (the prompt's last token) so a leading space of the continuation is kept.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = (), prefix_id: int | None = None):
        self.tokenizer, self.stop = tokenizer, list(stop)
        self.prefix = [prefix_id] if prefix_id is not None else []
        self.skip = tokenizer.decode(self.prefix) if self.prefix else ""
        self.ids: list[int] = []
        self.text, self.sent = "", 0

    def _decode(self) -> str:
        if self.ids[-1] >= self.tokenizer.n_words:  # a model vocab wider than the tokenizer's
            self.ids[-1] = self.tokenizer.unk_id if hasattr(self.tokenizer, "unk_id") else 0
        s = self.tokenizer.decode(self.prefix + self.ids)
        if self.prefix and not s.startswith(self.skip):  # prefix was a partial byte piece: drop it
            self.prefix, self.skip = [], ""
            s = self.tokenizer.decode(self.ids)
        return s[len(self.skip):]

    def push(self, token: int) -> tuple[str, bool]:
        """Add a token; return (text that is now final, whether a stop string was hit)."""
        self.ids.append(token)
        text = self._decode()
        hits = [i for i in (text.find(s, self.sent) for s in self.stop) if i >= 0]
        if hits:
            self.text = text[:min(hits)]
            return self.flush(), True
        self.text = text
        safe = len(text)
        while safe > self.sent and text[safe - 1] == "\ufffd":
            safe -= 1
        for s in self.stop:  # hold back a tail that may grow into a stop string
            for n in range(min(len(s) - 1, safe - self.sent), 0, -1):
                if text[safe - n:safe] == s[:n]:
                    safe -= n
                    break
        if safe <= self.sent:
            return "", False
        delta, self.sent = text[self.sent:safe], safe
        return delta, False

    def flush(self) -> str:
        delta, self.sent = self.text[self.sent:], len(self.text)
        return delta
