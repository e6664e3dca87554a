"""Step 5, language identification with langid.py's shipped model (normalised probabilities).

`LanguageIdentifier.classify` runs its byte n-gram automaton with a per-byte Python loop, then a
dense 7480x97 product. The automaton's state after a byte depends only on the last L bytes (L is
the deepest state, 4 for the shipped model), so we compute every position's state at once with L
vectorized steps, count states, map them to features with a sparse matrix, and multiply only the
non-zero feature rows. The result equals langid's own classify (a test checks it), ~5x faster.
"""

from __future__ import annotations

import numpy as np

_IDENT = None
_AUTO: dict = {}


def identifier():
    """langid's model, loaded once per process (about 2 s), with our vectorized tables."""
    global _IDENT
    if _IDENT is None:
        from langid.langid import LanguageIdentifier, model
        from scipy import sparse

        ident = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        nm = np.array(ident.tk_nextmove, dtype=np.int64)
        n_states = nm.size // 256
        depth = np.full(n_states, -1)
        depth[0] = 0
        frontier = np.array([0])
        while frontier.size:  # breadth-first: a state's distance from the root is its string's length
            nxt = np.unique(nm.reshape(n_states, 256)[frontier].ravel())
            nxt = nxt[depth[nxt] < 0]
            depth[nxt] = depth[frontier].max() + 1 if nxt.size else 0
            frontier = nxt
        rows = [s for s, feats in ident.tk_output.items() for _ in feats]
        cols = [f for feats in ident.tk_output.values() for f in feats]
        out = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_states, ident.nb_numfeats))
        _AUTO.update(nextmove=nm, n_states=n_states, depth=int(depth.max()), out_t=out.T.tocsr(),
                     ptc=ident.nb_ptc.astype(np.float64))  # langid's product is float64 (uint32 x float32)
        _IDENT = ident
    return _IDENT


def features(data: bytes) -> np.ndarray:
    """langid's `instance2fv(data)` as float64 feature counts."""
    ident = identifier()
    nm, depth = _AUTO["nextmove"], _AUTO["depth"]
    n = len(data)
    head = []
    state = 0
    for b in data[:depth - 1]:  # the first positions have fewer than `depth` bytes behind them
        state = ident.tk_nextmove[(state << 8) + b]
        head.append(state)
    states = np.array(head, dtype=np.int64)
    if n >= depth:
        b = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        st = np.zeros(n - depth + 1, dtype=np.int64)
        for k in range(depth):
            st = nm[(st << 8) + b[k:n - depth + 1 + k]]
        states = np.concatenate([states, st])
    counts = np.bincount(states, minlength=_AUTO["n_states"]).astype(np.float64)
    return _AUTO["out_t"] @ counts


def classify(text: str, max_chars: int = 2000) -> tuple[str, float]:
    """(language code, normalised probability) of the first max_chars characters."""
    ident = identifier()
    fv = features((text[:max_chars] if max_chars else text).encode("utf-8", "surrogatepass"))
    nz = np.flatnonzero(fv)
    if nz.size == 0:
        return "unknown", 0.0
    pdc = fv[nz] @ _AUTO["ptc"][nz] + ident.nb_pc
    pdc -= pdc.max()
    probs = np.exp(pdc)
    probs /= probs.sum()
    k = int(probs.argmax())
    return ident.nb_classes[k], float(probs[k])


def limit_threads() -> None:
    """One BLAS/OpenMP thread per worker process: the batched work is parallel across processes,
    and threaded BLAS on small products costs 30x more than it saves."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
