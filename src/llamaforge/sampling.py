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
import torch.nn.functional as F

from llamaforge.errors import UserError
from llamaforge.model.cache import SlotCache

TOP_P_CANDIDATES = 1024  # nucleus is searched among the most likely tokens (see filter_probs)
MAX_TOP_LOGPROBS = 20  # alternatives per token a row may ask for (OpenAI's limit)


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
    top_logprobs: int = 0  # with logprobs: also the n most likely tokens at each step (at most MAX_TOP_LOGPROBS)

    def validate(self, where: str = "sampling") -> SamplingParams:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise UserError(f"{where}: max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise UserError(f"{where}: temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"{where}: top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise UserError(f"{where}: top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not isinstance(self.top_logprobs, int) or not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise UserError(f"{where}: top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], "
                            f"got {self.top_logprobs!r}")
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
    top: list[tuple[int, float]] | None = None  # the most likely (token, log-prob) pairs, best first


@dataclass
class Row:
    rid: Any
    prompt: list[int]
    params: SamplingParams
    stop_ids: frozenset
    text: TextStream | None
    pos: int = 0  # position where the last sampled token will be written
    tokens: list[int] = field(default_factory=list)


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
    scaled = _scaled(logits, temperature)
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


def top_logprobs(logits: torch.Tensor, temperature: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The n most likely tokens per row and their log-probs, on the scale `sample` reports: ([rows, n], [rows, n])."""
    vals, idx = _scaled(logits, temperature).log_softmax(-1).topk(n, dim=-1)
    return vals, idx


def top_pairs(vals: torch.Tensor, idx: torch.Tensor) -> list:
    """`top_logprobs`' tensors ([..., n] log-probs and ids) -> nested lists of (id, log-prob) pairs, best first."""
    def pairs(i: list, v: list) -> list:
        return [pairs(a, b) for a, b in zip(i, v)] if i and isinstance(i[0], list) else list(zip(i, v))

    return pairs(idx.tolist(), vals.tolist())


def _scaled(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """logits / temperature per row; greedy rows (temperature 0) keep the raw logits."""
    return logits / torch.where(temperature > 0, temperature, torch.ones_like(temperature)).unsqueeze(-1)


class DecodeWeights:
    """Copies of the weights in the layouts a CPU decodes fastest from, as `decode_step` reads them.

    Decoding multiplies a few rows by every weight, and on a CPU nn.Linear's [out, in] layout is a
    slow way to do that. One row times the tiny-15m output head (V 32000 x D 288) takes ~4.3 ms in
    fp32 against ~1.7 ms with a contiguous W^T [in, out], and ~2.6 ms in bf16 against ~1.4 ms
    with oneDNN's prepacked layout; for 4-16 rows oneDNN's packing wins in fp32 too (16 rows:
    9.9 ms linear, 7.5 ms W^T, 4.3 ms packed). A block's seven products also become four, with
    wq|wk|wv and w1|w3 fused (`decode_forward`). Numbers: docs/bench/inference.md.

    mode "head": copy the output weight only; "all": the block linears too; "none"; None: on CPU
    "all" when the copies take at most ALL_COPIES_MAX_BYTES, else "head"; off other devices (their
    normal layout is fast). Each layout is made on first use: fp32 has W^T copies for one-row
    steps and packed ones for batched steps, bf16 packed ones for both. Memory per layout made:
    "head" V * D * element size (37 MB for tiny-15m fp32, 262 MB for a 7B model in bf16), "all"
    every linear weight once more (62 MB for tiny-15m fp32).

    Never stale: `get()` (at every decode step) drops the copies whenever a parameter is another
    tensor, has other storage or was updated in place (its version counter: optimizer steps,
    load_state_dict). Writes through `p.data` bypass the counter, so generate_ids and
    generate_stream also call `refresh()`: the next `get()` compares an exact checksum of every
    copied parameter (one read of the weights, ~10x cheaper than rebuilding) and rebuilds if any
    changed.
    """

    ALL_COPIES_MAX_BYTES = 1 << 30

    def __init__(self, model: torch.nn.Module, mode: str | None = None):
        if mode not in (None, "none", "head", "all"):
            raise UserError(f"decode weights mode must be none, head or all, got {mode!r}")
        self.out = getattr(model, "output", None)
        head = [self.out.weight] if isinstance(self.out, torch.nn.Linear) and self.out.bias is None else []
        blocks = _plain_blocks(model)
        lin = [w for b in blocks for w in _block_weights(b)]
        can_head = bool(head) and all(map(_copyable, head))
        can_all = can_head and bool(blocks) and all(map(_copyable, lin))
        if mode is None:
            small = sum(w.nbytes for w in head + lin) <= self.ALL_COPIES_MAX_BYTES
            mode = "all" if can_all and small else "head"
        mode = "none" if not can_head else "head" if mode == "all" and not can_all else mode
        self.mode, self.blocks = mode, blocks
        self._key: tuple = ()
        self._verify, self._sums = False, torch.zeros(0)
        self._sets: dict[bool, tuple[torch.Tensor, list[torch.Tensor] | None]] = {}

    def _params(self) -> list[torch.Tensor]:
        if self.mode == "none":
            return []
        return [self.out.weight] + ([w for b in self.blocks for w in _block_weights(b)] if self.mode == "all" else [])

    def refresh(self) -> None:
        """Check the weights' contents at the next use (for writes the version counter misses: `p.data`)."""
        self._verify = True

    def get(self, rows: int = 1) -> tuple[torch.Tensor | None, list[torch.Tensor] | None, bool]:
        """(output head copy, fused block copies, packed) for a step of `rows` rows; (None, None,
        False) when there are no copies. Made on first use, remade when the weights changed."""
        ps = self._params()
        if not ps:
            return None, None, False
        key = tuple((id(w), w.data_ptr(), w._version, w.dtype) for w in ps)
        if key != self._key or (self._verify and not torch.equal(_checksums(ps), self._sums)):
            self._sets = {}  # free the old copies before making new ones
            self._sums, self._key = _checksums(ps), key
        self._verify = False
        packed = (rows > 1 or ps[0].dtype == torch.bfloat16) and _can_pack()
        if packed not in self._sets:
            with torch.no_grad():
                layers = None
                if self.mode == "all":
                    layers = []
                    for b in self.blocks:
                        a, f = b.attention, b.feed_forward
                        for ws in ((a.wq, a.wk, a.wv), (a.wo,), (f.w1, f.w3), (f.w2,)):
                            layers.append(_pack(torch.cat([m.weight.detach() for m in ws]), packed))
                self._sets[packed] = (_pack(ps[0].detach(), packed), layers)
        return (*self._sets[packed], packed)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """fp32 logits [n, V] of final hidden states [n, D]."""
        w, _, packed = self.get(h.shape[0])
        return (self.out(h) if w is None else project(h, w, packed)).float()


def _checksums(ps: list[torch.Tensor]) -> torch.Tensor:
    """Exact fingerprints: the wrapping int64 sum of each tensor's bits, read 8 bytes at a time where
    the size allows (no conversion copy); any one changed element shows."""
    sums = []
    for w in ps:
        flat = w.detach().reshape(-1)
        ints = torch.int64 if flat.numel() * flat.element_size() % 8 == 0 else \
            {4: torch.int32, 2: torch.int16}[flat.element_size()]
        sums.append(flat.view(ints).sum(dtype=torch.int64))
    return torch.stack(sums) if sums else torch.zeros(0)


def _copyable(w: torch.Tensor) -> bool:
    return (type(w.data) is torch.Tensor and w.device.type == "cpu" and not w.is_inference()
            and w.dtype in (torch.float32, torch.bfloat16))


def _plain_blocks(model: torch.nn.Module) -> list:
    """The blocks when `model` is exactly our Transformer (decode_forward mirrors its forward), else []."""
    from llamaforge.model import llama

    if type(model) is not llama.Transformer:
        return []
    blocks = list(model.layers.values())
    ok = all(type(b) is llama.TransformerBlock and type(b.attention) is llama.Attention
             and type(b.feed_forward) is llama.FeedForward
             and all(type(m) is torch.nn.Linear and m.bias is None for m in _block_linears(b)) for b in blocks)
    return blocks if ok else []


def _block_linears(b) -> list[torch.nn.Module]:
    a, f = b.attention, b.feed_forward
    return [a.wq, a.wk, a.wv, a.wo, f.w1, f.w3, f.w2]


def _block_weights(b) -> list[torch.Tensor]:
    return [m.weight for m in _block_linears(b)]


def _can_pack() -> bool:
    global _PACK_OK
    if _PACK_OK is None:
        try:
            torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2), 1)
            _PACK_OK = torch.backends.mkldnn.is_available()
        except (RuntimeError, AttributeError):  # a build without oneDNN: W^T copies only
            _PACK_OK = False
    return _PACK_OK


_PACK_OK: bool | None = None


def _pack(w: torch.Tensor, packed: bool) -> torch.Tensor:
    """w [out, in] as oneDNN's packed layout (batch hint 1 for bf16, 4 for fp32: measured best) or W^T."""
    if packed:
        return torch.ops.mkldnn._reorder_linear_weight(w, 1 if w.dtype == torch.bfloat16 else 4)
    return w.t().contiguous()


@torch.library.custom_op("llamaforge::packed_linear", mutates_args=())
def packed_linear(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """h [n, D] @ w.T for a oneDNN-packed w [V, D] (an opaque op to torch.compile, which cannot lower it)."""
    return _linear_pointwise(h, w)


@packed_linear.register_fake
def _(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return h.new_empty(h.shape[0], w.shape[0])


def project(h: torch.Tensor, w: torch.Tensor, packed: bool) -> torch.Tensor:
    """h [n, D] times the decode-layout output weight (see DecodeWeights)."""
    if not packed:
        return h @ w
    if torch.compiler.is_compiling():
        return packed_linear(h, w)
    return _linear_pointwise(h, w)  # eager: the custom op's Python wrapper costs ~13 us a call


def _linear_pointwise(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise.default(h, w, None, "none", [], "")


def decode_forward(model: torch.nn.Module, tok: torch.Tensor, pos: torch.Tensor, cache: SlotCache,
                   layers: list[torch.Tensor], packed: bool) -> torch.Tensor:
    """Transformer.forward for one new token per row over the cache, reading the fused copies of
    DecodeWeights ("all"): final hidden states [n, 1, D]. tests/inference/test_decode_weights.py
    holds it to the model's own forward."""
    from llamaforge.model.llama import apply_rotary

    n = tok.shape[0]
    cos, sin = model.freqs_cos[pos].unsqueeze(2), model.freqs_sin[pos].unsqueeze(2)
    mask = cache.causal_mask(pos)
    h = model.tok_embeddings(tok)
    for i, b in enumerate(model.layers.values()):
        a = b.attention
        qkv_w, wo, w13, w2 = layers[4 * i: 4 * i + 4]
        nq, nk = a.wq.weight.shape[0], a.wk.weight.shape[0]
        qkv = project(b.attention_norm(h).view(n, -1), qkv_w, packed).view(n, 1, -1, a.head_dim)
        qk = apply_rotary(qkv[:, :, :(nq + nk) // a.head_dim], cos, sin).transpose(1, 2)  # [n, H + Hkv, 1, hd]
        q, k = qk[:, :nq // a.head_dim], qk[:, nq // a.head_dim:]
        v = qkv[:, :, (nq + nk) // a.head_dim:].transpose(1, 2)
        k, v = cache.update(i, pos, k, v)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
        h = h + project(o.transpose(1, 2).reshape(n, -1), wo, packed).view(n, 1, -1)
        g = project(b.ffn_norm(h).view(n, -1), w13, packed)
        hid = g.shape[-1] // 2
        h = h + project(F.silu(g[:, :hid]) * g[:, hid:], w2, packed).view(n, 1, -1)
    return model.norm(h)


def decode_step(model: torch.nn.Module, cache: SlotCache, tok: torch.Tensor, pos: torch.Tensor,
                temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
                uniform: torch.Tensor | None, kmax: int = 0, use_top_p: bool = False,
                want_logprobs: bool = False, head: torch.Tensor | None = None,
                layers: list[torch.Tensor] | None = None, packed: bool = False, top_n: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """One token for each of the first n slots: tok, pos [n] -> (next token [n], log-prob [n], the
    top_n alternatives ([n, top_n] log-probs and ids) or None).

    head, layers, packed: DecodeWeights' copies (None: the model's own weights and forward).
    """
    x, p = tok.unsqueeze(1), pos.unsqueeze(1)
    if head is None:
        logits = model(x, input_pos=p, cache=cache)[:, -1].float()
    else:
        h = decode_forward(model, x, p, cache, layers, packed) if layers is not None else \
            model(x, input_pos=p, cache=cache, return_hidden=True)
        logits = project(h[:, -1], head, packed).float()
    tok, lp = sample(logits, temperature, top_p, top_k, uniform, kmax, use_top_p, want_logprobs)
    return tok, lp, (top_logprobs(logits, temperature, top_n) if top_n else None)


class TextStream:
    """Incremental detokenization with stop strings.

    SentencePiece merges byte pieces and spaces, so text is decoded over a window of recent
    tokens after an anchor token (at first `prefix_id`, the prompt's last token, so a leading
    space of the continuation is kept). Once the window holds WINDOW tokens and ends on a
    complete character its text is final and the anchor moves to the last token: each push
    decodes at most ~WINDOW tokens, not the whole continuation.
    """

    WINDOW = 8

    def __init__(self, tokenizer, stop: Sequence[str] = (), prefix_id: int | None = None):
        self.tokenizer, self.stop = tokenizer, list(stop)
        self._anchor([prefix_id] if prefix_id is not None else [])
        self.ids: list[int] = []
        self.base, self.final = 0, ""  # ids[:base] decode to `final`
        self.text, self.sent = "", 0

    def _anchor(self, prefix: list[int]) -> None:
        self.prefix, self.skip = prefix, (self.tokenizer.decode(prefix) if prefix else "")

    def _decode(self) -> str:
        if self.ids[-1] >= self.tokenizer.n_words:  # a model vocab wider than the tokenizer's
            self.ids[-1] = self.tokenizer.unk_id if hasattr(self.tokenizer, "unk_id") else 0
        window = self.ids[self.base:]
        s = self.tokenizer.decode(self.prefix + window)
        if self.prefix and not s.startswith(self.skip):  # prefix was a partial byte piece: drop it
            self._anchor([])
            s = self.tokenizer.decode(window)
        text = self.final + s[len(self.skip):]
        if len(window) >= self.WINDOW and not text.endswith("\ufffd"):
            self.base, self.final = len(self.ids), text
            self._anchor(self.ids[-1:])
        return text

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
