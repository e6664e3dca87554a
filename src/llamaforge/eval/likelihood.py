"""Batched log-likelihood scoring: the one place where eval turns tokens into log-probabilities.

Perplexity, the lm-eval bridge and the likelihood-based safety benchmarks (CrowS-Pairs,
WinoGender, TruthfulQA MC) all call `LikelihoodScorer`. Its tokenization of a (context,
continuation) pair follows lm-eval's `TemplateLM._encode_pair` (trailing spaces of the context move
to the continuation; the pair is encoded whole and split at the context's length), and its
truncation follows lm-eval's HF model (`(ctx + cont)[-(max_len + 1):][:-1]`), so that our numbers
and lm-eval's `hf` model agree on the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

TokenPair = tuple[list[int], list[int]]


class LikelihoodScorer:
    """Scores continuations with a `Transformer` (plain nn.Module, logits [B, T, V])."""

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 16, max_length: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.max_length = int(max_length or model.args.max_seq_len)
        self.device = next(model.parameters()).device

    # -- tokens ---------------------------------------------------------------------------------
    def encode(self, text: str, bos: bool = True) -> list[int]:
        return self.tokenizer.encode(text, bos=bos, eos=False)

    def encode_pair(self, context: str, continuation: str) -> TokenPair:
        """lm-eval's split: encode context+continuation once, cut at the context's token count.

        An empty context means "the continuation after BOS" (lm-eval's prefix token).
        """
        if context == "":
            return [self.tokenizer.bos_id], self.encode(continuation, bos=False)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    @torch.no_grad()
    def score_tokens(self, requests: Sequence[TokenPair]) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), continuation is the greedy one) for each request.

        Requests whose model inputs are identical (multiple choice with one-token answers: MMLU's
        A/B/C/D, BoolQ's yes/no) share one forward pass, as lm-eval's hf model does. Inputs are
        sorted longest first so that each batch pads little; results come back in request order.
        An empty continuation (its text merged into the context's tokens) scores (0.0, True), as lm-eval.
        """
        out: list[tuple[float, bool] | None] = [(0.0, True) if not r[1] else None for r in requests]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, cont) in enumerate(requests):
            if cont:
                inp = tuple((list(ctx) + list(cont))[-(self.max_length + 1):][:-1])
                groups.setdefault(inp, []).append(i)
        inputs = sorted(groups, key=len, reverse=True)
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start:start + self.batch_size]
            batch = torch.zeros(len(chunk), len(chunk[0]), dtype=torch.long)
            for r, x in enumerate(chunk):
                batch[r, :len(x)] = torch.tensor(x, dtype=torch.long)
            # Hidden states only: the output head runs on the continuation positions alone, so memory
            # is not batch x length x vocab (8 GB in fp32 for 16 x 4096 x 32000).
            hidden = self.model(batch.to(self.device), return_hidden=True)
            for r, x in enumerate(chunk):
                n = len(x)
                for i in groups[x]:
                    c = list(requests[i][1])
                    # The last len(c) positions of the row predict the continuation tokens.
                    lp = F.log_softmax(self.model.output(hidden[r, n - len(c):n]).float(), dim=-1)
                    target = torch.tensor(c, device=lp.device)
                    greedy = bool((lp.argmax(-1) == target).all())
                    out[i] = (float(lp.gather(1, target[:, None]).sum()), greedy)
        return out  # type: ignore[return-value]

    # -- text -----------------------------------------------------------------------------------
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """log p(continuation | context) for (context, continuation) strings."""
        return self.score_tokens([self.encode_pair(c, x) for c, x in pairs])

    def windows(self, tokens: list[int], stride: int | None = None) -> list[TokenPair]:
        """Sliding windows over `tokens` (which start with BOS): every token after the first is
        scored exactly once, with up to `max_length - stride` tokens of earlier context.

        stride == max_length gives lm-eval's disjoint rolling windows (context 1 token).
        """
        stride = min(int(stride or self.max_length), self.max_length)
        if stride < 1:
            raise ValueError("stride must be >= 1")
        reqs = []
        for a in range(1, len(tokens), stride):
            b = min(a + stride, len(tokens))
            lo = max(0, b - self.max_length - 1)
            reqs.append((tokens[lo:a], tokens[a:b]))
        return reqs

    def rolling(self, texts: Sequence[str], stride: int | None = None) -> list[tuple[float, int]]:
        """(sum log p, number of scored tokens) of each whole text after BOS, in sliding windows."""
        all_reqs, owner = [], []
        for j, text in enumerate(texts):
            for req in self.windows(self.encode(text, bos=True), stride):
                all_reqs.append(req)
                owner.append(j)
        scores = self.score_tokens(all_reqs)
        totals = [[0.0, 0] for _ in texts]
        for j, req, (ll, _) in zip(owner, all_reqs, scores, strict=True):
            totals[j][0] += ll
            totals[j][1] += len(req[1])
        return [(ll, n) for ll, n in totals]
