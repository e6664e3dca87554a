"""What `data report` measures in one document: words, gender pronouns and demographic descriptors
(Llama 2 section 4.1, Table 9), using the lists shipped in llamaforge/resources."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from importlib import resources

_TOKEN = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


def _load(name: str) -> dict:
    data = json.loads(resources.files("llamaforge.resources").joinpath(name).read_text("utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


@cache
def pronoun_groups() -> dict[str, frozenset[str]]:
    return {k: frozenset(v) for k, v in _load("pronouns_en.json").items()}


@cache
def descriptor_axes() -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in _load("demographic_terms.json").items()}


@cache
def _term_index() -> tuple[dict[str, list[tuple[str, str]]], int]:
    """First word -> [(axis, term)], and the longest term in words."""
    index: dict[str, list[tuple[str, str]]] = {}
    longest = 1
    for axis, terms in descriptor_axes().items():
        for t in terms:
            words = t.split()
            longest = max(longest, len(words))
            index.setdefault(words[0], []).append((axis, t))
    return index, longest


def tokens(text: str) -> list[str]:
    """Lower-case word tokens; a contraction stays one token ("he's"), so its pronoun is split off
    below."""
    return _TOKEN.findall(text.lower())


def pronoun_counts(toks: list[str]) -> Counter:
    """Occurrences per pronoun group (she/he/they); "he's", "she'll" count as he, she."""
    groups = pronoun_groups()
    c: Counter = Counter()
    for t in toks:
        base = t.split("'", 1)[0]
        for g, words in groups.items():
            if base in words:
                c[g] += 1
    return c


def descriptor_mentions(toks: list[str]) -> set[tuple[str, str]]:
    """(axis, term) pairs mentioned in the document; multi-word terms match as phrases."""
    index, _ = _term_index()
    found: set[tuple[str, str]] = set()
    for i, t in enumerate(toks):
        for axis, term in index.get(t, ()):
            words = term.split()
            if len(words) == 1 or toks[i:i + len(words)] == words:
                found.add((axis, term))
    return found
