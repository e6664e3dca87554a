"""Step 8, privacy: a domain blocklist on each record's URL, and PII scrubbing (e-mail addresses,
phone numbers, IP addresses, Luhn-valid credit-card numbers) into typed placeholders."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from llamaforge.errors import UserError

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP_ADDRESS>", "credit_card": "<CREDIT_CARD>"}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
# Card candidates: 13-19 digits, optionally grouped by single spaces or dashes; the Luhn check decides.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.]|\.\d)")
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = re.compile(rf"(?<![\w:])(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,6}}:(?:{_H}:){{0,5}}{_H}|::(?:{_H}:){{1,6}}{_H})"
                   rf"(?![\w:])")
# Phones: international (+CC and 6-14 more digits in groups) or North American (3-3-4 with separators).
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4})(?!\w)"
)
_DIGIT = re.compile(r"\d")
_URL = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def scrub(text: str, kinds: list[str], replace: bool = True) -> tuple[str, dict[str, int]]:
    """(text with PII replaced by placeholders when `replace`, count per kind)."""
    counts: dict[str, int] = {}

    def sub(kind: str, pattern: re.Pattern, s: str, check=None) -> str:
        n = 0

        def rep(m: re.Match) -> str:
            nonlocal n
            if check is not None and not check(m.group(0)):
                return m.group(0)
            n += 1
            return PLACEHOLDERS[kind] if replace else m.group(0)

        out = pattern.sub(rep, s)
        if n:
            counts[kind] = counts.get(kind, 0) + n
        return out

    def card_ok(s: str) -> bool:
        d = re.sub(r"[ -]", "", s)
        return 13 <= len(d) <= 19 and luhn_ok(d)

    # Cards first (long digit runs), then e-mails (before phone digits inside them), IPs, phones.
    if "@" not in text and not _DIGIT.search(text):  # nothing any pattern could match
        return text, counts
    if "credit_card" in kinds:
        text = sub("credit_card", _CARD, text, card_ok)
    if "email" in kinds and "@" in text:
        text = sub("email", _EMAIL, text)
    if "ip" in kinds:
        text = sub("ip", _IPV4, text)
        if ":" in text:
            text = sub("ip", _IPV6, text, lambda s: s.count(":") >= 3 or "::" in s)
    if "phone" in kinds:
        text = sub("phone", _PHONE, text, lambda s: sum(c.isdigit() for c in s) >= 7)
    return text, counts


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url if "//" in url else "//" + url).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def load_blocklist(path: str | Path) -> frozenset[str]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"privacy.blocklist: {p} not found (a file with one domain per line)")
    domains = set()
    for n, line in enumerate(p.read_text("utf-8", errors="replace").splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        host = host_of(s)
        if host is None or "." not in host:
            raise UserError(f"{p}:{n}: {s!r} is not a domain")
        domains.add(host)
    return frozenset(domains)


def blocked(host: str | None, blocklist: frozenset[str]) -> str | None:
    """The blocklist entry that matches host or one of its parent domains, if any."""
    if not host:
        return None
    parts = host.split(".")
    for i in range(len(parts) - 1):
        d = ".".join(parts[i:])
        if d in blocklist:
            return d
    return None


def blocked_url_in_text(text: str, blocklist: frozenset[str]) -> str | None:
    for m in _URL.finditer(text):
        hit = blocked(host_of(m.group(0)), blocklist)
        if hit:
            return hit
    return None
