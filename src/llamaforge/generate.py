"""Batched generation over the static KV cache: the decoder that generate, chat, the server and RLHF share.

`BatchDecoder` keeps up to `max_batch` rows in the slots of one KV cache. Prompts of different
lengths decode together, each row at its own positions (no left padding). Rows join between
steps (prefill of the newcomers, then one decode step for everyone) and leave when they finish:
the last active slot is moved into the freed one, so a step computes only the active rows and
attends only over the positions the longest of them needs. The decode step can be compiled;
the only host synchronisation is reading the new tokens to check stopping: every step, or every
`sync_every` steps for rows that need no text (generate_ids).

Public API: `generate` (strings), `generate_stream` (text deltas as they come), `generate_ids`
(token ids and log-probs as tensors, for RLHF), and `BatchDecoder` itself (chat, server).
"""

from __future__ import annotations

import sys
import threading
import types
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from llamaforge.errors import UserError
from llamaforge.model.cache import SlotCache
from llamaforge.sampling import (
    MAX_TOP_LOGPROBS,
    DecodeWeights,
    Event,
    Row,
    SamplingParams,
    TextStream,
    decode_step,
    sample,
    top_logprobs,
    top_pairs,
)

_COMPILED: dict[str, Any] = {}


class BatchDecoder:
    """Continuous batching over one slot KV cache. `add` and `cancel` may be called from other
    threads; `step` from one thread at a time."""

    def __init__(self, model: torch.nn.Module, tokenizer=None, max_batch: int = 8, max_len: int | None = None,
                 compile: bool = False, compile_mode: str | None = None, prefill_tokens: int = 8192,
                 sync_every: int = 1, decode_weights: str | None = None):
        """sync_every k > 1: rows without text run up to k decode steps per host sync (the device
        queues steps back to back; a row that stops mid-way wastes at most k - 1 steps).
        decode_weights: none, head or all (None: by device and size): sampling.DecodeWeights."""
        self.model, self.tokenizer = model, tokenizer  # Llama has no dropout: train/eval mode is left alone
        self.weights = DecodeWeights(model, decode_weights)
        self.sync_every = max(1, sync_every)
        self.cache = SlotCache.for_model(model, max_batch, max_len)
        if not compile:
            self.cache.shrink()  # grows as rows do (SlotCache.reserve)
        self.max_batch, self.max_len = max_batch, self.cache.max_len
        self.prefill_tokens = prefill_tokens
        dev = self.cache.device
        z = lambda dt: torch.zeros(max_batch, dtype=dt, device=dev)  # noqa: E731
        self.tok, self.pos, self.ntok, self.top_k = z(torch.long), z(torch.long), z(torch.long), z(torch.long)
        self.temp, self.top_p = z(torch.float32), z(torch.float32) + 1
        self.unif = torch.zeros(max_batch, self.max_len, device=dev)  # each row's pre-drawn uniforms
        self.arange = torch.arange(max_batch, device=dev)
        self.out_tok = torch.zeros(max_batch, self.sync_every, dtype=torch.long, device=dev)
        self.out_lp = torch.zeros(max_batch, self.sync_every, device=dev)
        self.out_top: tuple[torch.Tensor, torch.Tensor] | None = None  # made when a row asks for top_logprobs
        self.rows: list[Row] = []
        self.pending: deque[Row] = deque()
        self._cancelled: set = set()
        self._lock = threading.Lock()
        self.compiled = compile
        self.cudagraphs = compile and compile_mode == "reduce-overhead"
        self.step_fn = decode_step
        if compile:
            if self.cudagraphs:  # CUDA graphs update the cache in place at fixed addresses
                for t in self.cache.buffers_kv():  # (one graph per decoder: reuse the decoder)
                    torch._dynamo.mark_static_address(t)
            key = compile_mode or "default"
            if key not in _COMPILED:
                _COMPILED[key] = torch.compile(decode_step, fullgraph=True, dynamic=False, mode=compile_mode)
            self.step_fn = _COMPILED[key]

    # -- requests ---------------------------------------------------------------------------------
    def add(self, rid: Any, prompt: Sequence[int], params: SamplingParams, text: bool | None = None,
            prefix_id: int | None = None) -> None:
        """Queue a row; it joins at the next step. text: stream text (default: when a tokenizer is set)."""
        params.validate(f"request {rid}")
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise UserError(f"request {rid}: empty prompt (a prompt needs at least one token, e.g. bos)")
        if len(prompt) + params.max_new_tokens > self.max_len:
            raise UserError(f"request {rid}: prompt ({len(prompt)} tokens) + max_new_tokens "
                            f"({params.max_new_tokens}) exceeds the context of {self.max_len} tokens")
        vocab = self.model.args.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise UserError(f"request {rid}: token ids must be in [0, {vocab})")
        if params.stop and self.tokenizer is None:
            raise UserError("stop strings need a tokenizer")
        stop_ids = params.stop_ids
        if stop_ids is None:
            stop_ids = [self.tokenizer.eos_id] if self.tokenizer is not None else []
        want_text = (self.tokenizer is not None) if text is None else text
        stream = TextStream(self.tokenizer, params.stop, prefix_id) if want_text else None
        if params.temperature > 0 and params.seed is None:  # follow torch.manual_seed
            params = replace(params, seed=int(torch.randint(0, 2**62, ()).item()))
        with self._lock:
            self.pending.append(Row(rid, prompt, params, frozenset(stop_ids), stream))

    def cancel(self, rid: Any) -> None:
        """Drop a row (running or waiting) before the next step. Safe from another thread."""
        with self._lock:
            self._cancelled.add(rid)

    @property
    def busy(self) -> bool:
        return bool(self.rows or self.pending)

    @property
    def n_active(self) -> int:
        return len(self.rows)

    # -- stepping ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[Event]:
        """Prefill waiting rows that fit, then decode one token for every active row."""
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            if cancelled:
                self.pending = deque(r for r in self.pending if r.rid not in cancelled)
        if cancelled:
            self._release([i for i, r in enumerate(self.rows) if r.rid in cancelled])
        events: list[Event] = []
        new = self._take_pending()
        if new:
            events += self._prefill(new)
        if self.rows:
            events += self._decode()
        if not self.rows and not self.compiled:
            self.cache.shrink()
        return events

    def _take_pending(self) -> list[Row]:
        new: list[Row] = []
        with self._lock:
            while self.pending and len(self.rows) + len(new) < self.max_batch:
                longest = max([len(r.prompt) for r in new] + [len(self.pending[0].prompt)])
                if new and longest * (len(new) + 1) > self.prefill_tokens:
                    break
                new.append(self.pending.popleft())
        return new

    def _params(self, rows: list[Row]) -> tuple[int, bool, bool, bool, int]:
        hot = [r.params for r in rows if r.params.temperature > 0]
        kmax = max((p.top_k for p in hot), default=0)
        ntop = max((r.params.top_logprobs for r in rows if r.params.logprobs), default=0)
        return kmax, any(p.top_p < 1 for p in hot), bool(hot), any(r.params.logprobs for r in rows), ntop

    def _prefill(self, new: list[Row]) -> list[Event]:
        start, k = len(self.rows), len(new)
        dev = self.tok.device
        lens = [len(r.prompt) for r in new]
        lmax = max(lens)
        toks = torch.zeros(k, lmax, dtype=torch.long)
        for i, r in enumerate(new):
            toks[i, :lens[i]] = torch.tensor(r.prompt)
            s = start + i
            p = r.params
            self.temp[s], self.top_p[s], self.top_k[s] = p.temperature, p.top_p, p.top_k
            self.pos[s], self.ntok[s] = lens[i], 0
            if p.temperature > 0:
                g = torch.Generator().manual_seed(p.seed)
                self.unif[s, :p.max_new_tokens] = torch.rand(p.max_new_tokens, generator=g).to(dev)
            r.pos = lens[i]
        c = self.cache
        c.reserve(lmax)
        c.start, c.live, c.prefill = start, lmax, True
        try:
            h = self.model(toks.to(dev), input_pos=torch.arange(lmax, device=dev), cache=c, return_hidden=True)
        finally:
            c.prefill = False
        last = h[torch.arange(k, device=dev), torch.tensor(lens, device=dev) - 1]
        logits = self.weights.logits(last)
        kmax, use_top_p, hot, want_lp, ntop = self._params(new)
        sl = slice(start, start + k)
        u = self.unif[sl, 0] if hot else None
        tok, lp = sample(logits, self.temp[sl], self.top_p[sl], self.top_k[sl], u, kmax, use_top_p, want_lp)
        tops = top_pairs(*(t.unsqueeze(1) for t in top_logprobs(logits, self.temp[sl], ntop))) if ntop else None
        self.tok[sl] = tok
        self.ntok[sl] = 1
        self.rows += new
        return self._accept(start, tok.unsqueeze(1).tolist(), lp.unsqueeze(1).tolist() if lp is not None else None,
                            tops)

    def _decode(self) -> list[Event]:
        n = len(self.rows)
        nb = min(self.max_batch, 1 << (n - 1).bit_length()) if self.compiled else n
        kmax, use_top_p, hot, want_lp, ntop = self._params(self.rows)
        if ntop and self.out_top is None:
            shape = (self.max_batch, self.sync_every, MAX_TOP_LOGPROBS)
            self.out_top = (torch.zeros(shape, device=self.tok.device),
                            torch.zeros(shape, dtype=torch.long, device=self.tok.device))
        k = 1
        if self.sync_every > 1 and all(r.text is None for r in self.rows):
            k = min(self.sync_every, min(r.params.max_new_tokens - len(r.tokens) for r in self.rows))
        c = self.cache
        c.start, c.prefill = 0, False
        c.live = self.max_len if self.compiled else max(r.pos for r in self.rows) + k
        c.reserve(c.live)
        w = self.weights.get(nb)  # the copies are remade here if the weights changed
        for j in range(k):
            if self.cudagraphs:  # the previous step's outputs were copied out: its buffers may be reused
                torch.compiler.cudagraph_mark_step_begin()
            u = self.unif[self.arange[:nb], self.ntok[:nb]] if hot else None
            tok, lp, top = self.step_fn(self.model, c, self.tok[:nb], self.pos[:nb], self.temp[:nb],
                                        self.top_p[:nb], self.top_k[:nb], u, kmax, use_top_p, want_lp, *w,
                                        top_n=ntop)
            self.tok[:n] = tok[:n]
            self.out_tok[:n, j] = tok[:n]  # copied now: a CUDA-graph output is overwritten by the next step
            if lp is not None:
                self.out_lp[:n, j] = lp[:n]
            if top is not None:
                self.out_top[0][:n, j, :ntop], self.out_top[1][:n, j, :ntop] = top[0][:n], top[1][:n]
            self.pos[:n] += 1
            self.ntok[:n] += 1
        for r in self.rows:
            r.pos += k
        toks = self.out_tok[:n, :k].tolist()  # the one host sync per k tokens: stop checks and streaming
        tops = top_pairs(self.out_top[0][:n, :k, :ntop], self.out_top[1][:n, :k, :ntop]) if ntop else None
        return self._accept(0, toks, self.out_lp[:n, :k].tolist() if want_lp else None, tops)

    def _accept(self, start: int, toks: list[list[int]], lps: list[list[float]] | None,
                tops: list[list[list[tuple[int, float]]]] | None = None) -> list[Event]:
        """Take each row's new tokens (one per step) in order, up to the one that finishes it."""
        events, done = [], []
        for i, row_toks in enumerate(toks):
            s = start + i
            r = self.rows[s]
            for j, t in enumerate(row_toks):
                r.tokens.append(t)
                finish, text = None, ""
                if t in r.stop_ids:
                    finish = "stop"
                    text = r.text.flush() if r.text else ""
                else:
                    if r.text is not None:
                        text, hit = r.text.push(t)
                        finish = "stop" if hit else None
                    if finish is None and len(r.tokens) >= r.params.max_new_tokens:
                        finish = "length"
                        text += r.text.flush() if r.text else ""
                top = tops[i][j][:r.params.top_logprobs] if tops is not None and r.params.logprobs else None
                events.append(Event(r.rid, t, lps[i][j] if lps is not None else None, text, finish, top))
                if finish:
                    done.append(s)
                    break
        self._release(done)
        return events

    def _release(self, slots: list[int]) -> None:
        """Free slots, keeping the active rows contiguous: the last row moves into each hole."""
        for s in sorted(slots, reverse=True):
            last = len(self.rows) - 1
            if s != last:
                r = self.rows[last]
                self.cache.move_row(last, s, r.pos)
                for t in (self.tok, self.pos, self.ntok, self.temp, self.top_p, self.top_k, self.unif):
                    t[s] = t[last]
                self.rows[s] = r
            self.rows.pop()
            self.pos[last], self.ntok[last] = 0, 0


# -- convenience APIs -------------------------------------------------------------------------------
@dataclass
class Generation:
    """What `generate_ids` returns (all on the model's device).

    tokens [B, N] generated ids, right-padded with pad_id; a row that stopped on a stop id ends
    with it (its log-prob is part of the policy's action). lengths [B]: generated tokens per row.
    logprobs [B, N] (or None): log-prob of each token under softmax(logits / temperature); 0 past
    lengths. finish_reasons: "stop" or "length" per row.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    logprobs: torch.Tensor | None
    finish_reasons: list[str]

    def row(self, i: int) -> list[int]:
        return self.tokens[i, : int(self.lengths[i])].tolist()

    def concat(self, prompts: Sequence[Sequence[int]], pad_id: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """prompt + response per row, right-padded: (ids [B, L], attention mask, response mask)."""
        rows = [list(p) + self.row(i) for i, p in enumerate(prompts)]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attn = torch.zeros(len(rows), width, dtype=torch.bool)
        resp = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            attn[i, : len(r)] = True
            resp[i, len(prompts[i]): len(r)] = True
        dev = self.tokens.device
        return ids.to(dev), attn.to(dev), resp.to(dev)


def _cache_len(model, longest_prompt: int, max_new_tokens: int) -> int:
    need = longest_prompt + max_new_tokens
    ctx = model.args.max_seq_len
    if need > ctx:
        raise UserError(f"prompt ({longest_prompt} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                        f"model's context of {ctx} tokens; shorten the prompt or lower max_new_tokens")
    return min(ctx, -(-need // 64) * 64)


def generate_ids(model: torch.nn.Module, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 64,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, stop_ids: Sequence[int] = (),
                 seed: int | None = None, logprobs: bool = False, max_batch: int = 64, compile: bool = False,
                 pad_id: int = 0, sync_every: int = 8, decoder: BatchDecoder | None = None) -> Generation:
    """Sample continuations of token-id prompts (the API RLHF uses); row i uses seed + i.

    sync_every: decode steps between host syncs (stop checks); see BatchDecoder.
    """
    if not prompts:
        raise UserError("generate_ids: no prompts")
    dec = decoder or BatchDecoder(model, None, min(len(prompts), max_batch),
                                  _cache_len(model, max(map(len, prompts)), max_new_tokens), compile,
                                  sync_every=sync_every)
    dec.weights.refresh()  # RLHF updates the weights between calls: never decode with an old copy
    for i, p in enumerate(prompts):
        sp = SamplingParams(max_new_tokens, temperature, top_p, top_k, [], list(stop_ids),
                            None if seed is None else seed + i, logprobs)
        dec.add(i, p, sp, text=False)
    toks: list[list[int]] = [[] for _ in prompts]
    lps: list[list[float]] = [[] for _ in prompts]
    reasons = [""] * len(prompts)
    while dec.busy:
        for ev in dec.step():
            toks[ev.rid].append(ev.token)
            if ev.logprob is not None:
                lps[ev.rid].append(ev.logprob)
            if ev.finish:
                reasons[ev.rid] = ev.finish
    dev = dec.tok.device
    width = max(map(len, toks))
    out = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    lp = torch.zeros(len(prompts), width) if logprobs else None
    for i, t in enumerate(toks):
        out[i, : len(t)] = torch.tensor(t)
        if lp is not None:
            lp[i, : len(t)] = torch.tensor(lps[i])
    lengths = torch.tensor([len(t) for t in toks])
    return Generation(out.to(dev), lengths.to(dev), lp.to(dev) if lp is not None else None, reasons)


Prompt = str | list[dict]


def encode_prompt(tokenizer, prompt: Prompt, where: str = "prompt") -> tuple[list[int], int | None]:
    """Token ids of a text prompt (with bos) or a chat dialogue (Llama 2 template), and the prefix id
    used to detokenize the continuation (None for chat: the answer's leading space is dropped)."""
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt, bos=True)
        return ids, (ids[-1] if len(ids) > 1 else None)
    if isinstance(prompt, list):
        from llamaforge.tokenizer import validate_dialog

        validate_dialog(prompt, where)
        return tokenizer.encode_chat_prompt(prompt), None
    raise UserError(f"{where}: expected a string or a list of chat messages, got {type(prompt).__name__}")


@dataclass
class StreamEvent:
    index: int
    text: str
    finish_reason: str | None


def generate_stream(model: torch.nn.Module, tokenizer, prompts: Sequence[Prompt], *, max_new_tokens: int = 64,
                    temperature: float = 0.6, top_p: float = 0.9, top_k: int = 0, stop: Sequence[str] = (),
                    seed: int | None = None, max_batch: int = 32, compile: bool = False,
                    decoder: BatchDecoder | None = None) -> Iterator[StreamEvent]:
    """Yield text deltas (index = prompt number) as the batch decodes; each row ends with a finish_reason."""
    encoded = [encode_prompt(tokenizer, p, f"prompt {i}") for i, p in enumerate(prompts)]
    if not encoded:
        return
    dec = decoder or BatchDecoder(model, tokenizer, min(len(prompts), max_batch),
                                  _cache_len(model, max(len(e[0]) for e in encoded), max_new_tokens), compile)
    dec.weights.refresh()
    for i, (ids, prefix) in enumerate(encoded):
        sp = SamplingParams(max_new_tokens, temperature, top_p, top_k, list(stop), None,
                            None if seed is None else seed + i)
        dec.add(i, ids, sp, text=True, prefix_id=prefix)
    while dec.busy:
        for ev in dec.step():
            if ev.text or ev.finish:
                yield StreamEvent(ev.rid, ev.text, ev.finish)


def generate(model: torch.nn.Module, tokenizer, prompts: Sequence[Prompt], *, max_new_tokens: int = 64,
             temperature: float = 0.6, top_p: float = 0.9, top_k: int = 0, stop: Sequence[str] = (),
             seed: int | None = None, max_batch: int = 32, compile: bool = False) -> list[str]:
    """Completions (without the prompts) of text prompts or chat dialogues, decoded as one batch."""
    if isinstance(prompts, str):
        prompts = [prompts]
    out = [""] * len(prompts)
    for ev in generate_stream(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=top_p, top_k=top_k, stop=stop, seed=seed, max_batch=max_batch,
                              compile=compile):
        out[ev.index] += ev.text
    return out


class _CallableModule(types.ModuleType):
    """`from llamaforge import generate` yields this module (Python binds the submodule to the
    package attribute on import), so calling the module calls `generate`."""

    def __call__(self, *args, **kwargs) -> list[str]:
        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
