"""Step 6, quality rules of Gopher (Rae et al. 2021, appendix A) and C4 (Raffel et al. 2020).

`failed_rules` returns the names of the rules a document breaks; each has a bound in
QualityConfig and is off when that bound is 0. Repetition is measured with numpy over word
n-gram hashes, so its cost stays small next to the classifiers.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from importlib import resources

import numpy as np

from llamaforge.data.clean.config import QualityConfig

_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~…’‘“”–—«»¡¿·•"
_ALPHA_TOKEN = re.compile(r"[^\W\d_]\S*")  # one match per whitespace token that holds a letter
_TERMINAL = (".", "!", "?", '"', "'", "”", "’", "…", ")", ":")
_BULLETS = ("•", "‣", "-", "*", "–", "—", "·", "●", "▪", "◦")
_ELLIPSIS = ("...", "…")


@cache
def stop_words() -> frozenset[str]:
    """The shipped English stop-word list (resources/stopwords_en.txt)."""
    text = resources.files("llamaforge.resources").joinpath("stopwords_en.txt").read_text("utf-8")
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip() and not w.startswith("#"))


def _dup_fraction(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of their characters)."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = 0
    for s in items:
        if s in seen:
            dup += 1
            dup_chars += len(s)
        else:
            seen.add(s)
    total_chars = sum(map(len, items)) or 1
    return dup / len(items), dup_chars / total_chars


def _ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    m = ids.size - n + 1
    h = ids[:m].copy()
    for k in range(1, n):
        h = h * np.uint64(1000003) + ids[k:k + m]
    return h


def repetition(words: list[str], top_ns=(2, 3, 4), dup_ns=range(5, 11)) -> dict[str, float]:
    """Gopher's top n-gram character fraction (n=2..4) and duplicate n-gram character fraction
    (n=5..10): characters of words covered by a repeated occurrence of an n-gram, over all word
    characters."""
    out: dict[str, float] = {}
    if len(words) < 2:
        return out
    # str hashes are salted per process but stable within it: enough to find repeats in one document
    ids = np.array(list(map(hash, words)), dtype=np.int64).view(np.uint64)
    lens = np.array(list(map(len, words)), dtype=np.int64)
    total = float(lens.sum()) or 1.0
    csum = np.concatenate([[0], np.cumsum(lens)])
    for n in top_ns:
        if ids.size < n:
            break
        h = _ngram_hashes(ids, n)
        u, first, counts = np.unique(h, return_index=True, return_counts=True)
        k = int(counts.argmax())
        if counts[k] > 1:
            p = int(first[k])
            out[f"top_{n}gram"] = float(csum[p + n] - csum[p]) * int(counts[k]) / total
        else:
            out[f"top_{n}gram"] = 0.0
    for n in dup_ns:
        if ids.size < n:
            break
        h = _ngram_hashes(ids, n)
        _, first = np.unique(h, return_index=True)
        dup = np.ones(h.size, dtype=bool)
        dup[first] = False
        if not dup.any():  # no repeated n-gram: none of any longer n either
            for m in dup_ns:
                if m >= n:
                    out[f"dup_{m}gram"] = 0.0
            break
        cover = np.zeros(ids.size + 1, dtype=np.int64)
        pos = np.flatnonzero(dup)
        np.add.at(cover, pos, 1)
        np.add.at(cover, pos + n, -1)
        mask = np.cumsum(cover[:-1]) > 0
        out[f"dup_{n}gram"] = float(lens[mask].sum()) / total
    return out


def failed_rules(text: str, cfg: QualityConfig) -> list[str]:
    """Names of the rules `text` fails (empty when it passes)."""
    fails: list[str] = []
    words = text.lower().split()
    content = [w for w in words if w.strip(_PUNCT)]  # Gopher ignores pure-symbol tokens
    n = len(content)
    if cfg.min_words and n < cfg.min_words:
        fails.append("min_words")
    if cfg.max_words and n > cfg.max_words:
        fails.append("max_words")
    if n:
        mean = sum(map(len, content)) / n
        if cfg.min_mean_word_length and mean < cfg.min_mean_word_length:
            fails.append("min_mean_word_length")
        if cfg.max_mean_word_length and mean > cfg.max_mean_word_length:
            fails.append("max_mean_word_length")
    if words and cfg.max_symbol_word_ratio:
        symbols = text.count("#") + text.count("...") + text.count("…")
        if symbols / len(words) > cfg.max_symbol_word_ratio:
            fails.append("max_symbol_word_ratio")
    if words and cfg.min_alpha_word_fraction:
        alpha = len(_ALPHA_TOKEN.findall(text))
        if alpha / len(words) < cfg.min_alpha_word_fraction:
            fails.append("min_alpha_word_fraction")
    if cfg.min_stop_words:
        sw = stop_words()
        found = 0
        for w in words:
            if w.strip(".,;:!?\"'()") in sw:
                found += 1
                if found >= cfg.min_stop_words:
                    break
        if found < cfg.min_stop_words:
            fails.append("min_stop_words")
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if lines:
        if cfg.min_line_punct_fraction:
            ends = sum(1 for ln in lines if ln.endswith(_TERMINAL))
            if ends / len(lines) < cfg.min_line_punct_fraction:
                fails.append("min_line_punct_fraction")
        if cfg.max_bullet_line_fraction:
            bullets = sum(1 for ln in lines if ln.startswith(_BULLETS))
            if bullets / len(lines) > cfg.max_bullet_line_fraction:
                fails.append("max_bullet_line_fraction")
        if cfg.max_ellipsis_line_fraction:
            ell = sum(1 for ln in lines if ln.endswith(_ELLIPSIS))
            if ell / len(lines) > cfg.max_ellipsis_line_fraction:
                fails.append("max_ellipsis_line_fraction")
        frac, char_frac = _dup_fraction(lines)
        if cfg.max_dup_line_fraction and frac > cfg.max_dup_line_fraction:
            fails.append("max_dup_line_fraction")
        if cfg.max_dup_line_char_fraction and char_frac > cfg.max_dup_line_char_fraction:
            fails.append("max_dup_line_char_fraction")
        paras = [p.strip() for p in text.split("\n\n") if p.strip()]
        frac, char_frac = _dup_fraction(paras)
        if cfg.max_dup_para_fraction and frac > cfg.max_dup_para_fraction:
            fails.append("max_dup_para_fraction")
        if cfg.max_dup_para_char_fraction and char_frac > cfg.max_dup_para_char_fraction:
            fails.append("max_dup_para_char_fraction")
    if cfg.lorem_ipsum and "lorem ipsum" in text.lower():
        fails.append("lorem_ipsum")
    top = [t for t in cfg.top_ngram_max_fraction]
    dup = [t for t in cfg.dup_ngram_max_fraction]
    if content and (any(top) or any(dup)):
        rep = repetition(content, top_ns=range(2, 2 + len(top)),
                         dup_ns=range(5, 5 + len(dup)))
        for i, bound in enumerate(top):
            if bound and rep.get(f"top_{i + 2}gram", 0.0) > bound:
                fails.append(f"top_{i + 2}gram_fraction")
        for i, bound in enumerate(dup):
            if bound and rep.get(f"dup_{i + 5}gram", 0.0) > bound:
                fails.append(f"dup_{i + 5}gram_fraction")
    return fails


def rule_names(cfg: QualityConfig) -> list[str]:
    """Every rule the config can report, in order (for tables with zero counts)."""
    names = ["min_words", "max_words", "min_mean_word_length", "max_mean_word_length", "max_symbol_word_ratio",
             "min_alpha_word_fraction", "min_stop_words", "min_line_punct_fraction", "max_bullet_line_fraction",
             "max_ellipsis_line_fraction", "max_dup_line_fraction", "max_dup_line_char_fraction",
             "max_dup_para_fraction", "max_dup_para_char_fraction", "lorem_ipsum"]
    names += [f"top_{i + 2}gram_fraction" for i in range(len(cfg.top_ngram_max_fraction))]
    names += [f"dup_{i + 5}gram_fraction" for i in range(len(cfg.dup_ngram_max_fraction))]
    return names


def summarize(counter: Counter) -> dict[str, int]:
    return dict(sorted(counter.items()))
