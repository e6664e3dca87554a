"""Step 2, normalization: Unicode form, control characters, whitespace, optional mojibake repair.

Also the keys that deduplication hashes: a document key (case and whitespace folded) and a CCNet
line key (also digits to 0, punctuation and accents removed), so trivial variants collide.
"""

from __future__ import annotations

import re
import unicodedata

from llamaforge.data.clean.config import NormalizeConfig

# C0/C1 controls except \t \n, plus zero-width and BOM characters that are invisible in text.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\u2060\ufeff\ufffe]")
# Runs of 2+ spaces, or any other space character: single spaces (most of them) are never touched.
_SPACE_CHARS = "\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_SPACES = re.compile(f"[ {_SPACE_CHARS}]{{2,}}|[{_SPACE_CHARS}]")
_TRAILING = re.compile(" +\n| +$")
_NEWLINES = re.compile("\n{3,}")
_LINESEP = re.compile("\r\n?|[\u2028\u2029\x85]")
# Signs of UTF-8 bytes decoded as cp1252 / latin-1: "Ã©", "â€™", "Â ".
_MOJIBAKE = re.compile("[ÃÂâ][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013"
                       "\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]")


def _redecode(text: str, codec: str) -> str | None:
    try:
        return text.encode(codec).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 read as cp1252 or latin-1, run by run, only where the repair decodes cleanly."""
    if not _MOJIBAKE.search(text):
        return text

    def repair(m: re.Match) -> str:
        s = m.group(0)
        for codec in ("cp1252", "latin-1"):
            fixed = _redecode(s, codec)
            if fixed is not None:
                return fixed
        return s

    # A run of non-ASCII characters that are all encodable as cp1252/latin-1 is one candidate.
    return re.sub("[\u0080-\u00ff\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014"
                  "\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]{2,}", repair, text)


def normalize_text(text: str, cfg: NormalizeConfig) -> str:
    if not cfg.enabled:
        return text
    if cfg.fix_mojibake:
        text = fix_mojibake(text)
    if cfg.form != "none" and not unicodedata.is_normalized(cfg.form, text):
        text = unicodedata.normalize(cfg.form, text)
    if "\r" in text or "\u2028" in text or "\u2029" in text or "\x85" in text:
        text = _LINESEP.sub("\n", text)
    if cfg.remove_control:
        text = _CONTROL.sub("", text)
    if cfg.whitespace:
        if not text.isascii() or "  " in text or "\t" in text:  # substring tests: C speed, usually false
            text = _SPACES.sub(" ", text)
        if " \n" in text or text.endswith(" "):
            text = _TRAILING.sub(lambda m: "\n" if m.group(0).endswith("\n") else "", text)
        if "\n\n\n" in text:
            text = _NEWLINES.sub("\n\n", text)
        text = text.strip()
    return text


_WS = re.compile(r"\s+")
_DIGIT = re.compile(r"\d")
_PUNCT = re.compile(r"[^\w\s]|_")
# ASCII fast path of line_key: punctuation removed, digits to 0, in one C call.
_ASCII_KEY = str.maketrans({**{c: None for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"},
                            **{d: "0" for d in "0123456789"}})


def doc_key(text: str) -> str:
    """What exact document deduplication compares: case folded, whitespace collapsed."""
    return _WS.sub(" ", text.lower()).strip()


def line_key(line: str) -> str:
    """CCNet's paragraph normalization: lower case, no accents, digits to 0, no punctuation."""
    s = line.lower()
    if s.isascii():
        return " ".join(s.translate(_ASCII_KEY).split())
    s = unicodedata.normalize("NFD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = _PUNCT.sub("", _DIGIT.sub("0", s))
    return _WS.sub(" ", s).strip()


_ASCII_WORDS = str.maketrans({c: " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"})


def shingle_words(text: str) -> list[str]:
    """Words for near-duplicate shingles: lower case, punctuation dropped."""
    s = text.lower()
    if s.isascii():
        return s.translate(_ASCII_WORDS).split()
    return _PUNCT.sub(" ", s).split()
