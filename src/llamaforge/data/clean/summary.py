"""Turning the flat counters of the workers into the per-step counts of manifest.json, and the
funnel table printed at the end of a run."""

from __future__ import annotations

from collections import Counter
from typing import Any

from llamaforge.data.clean.config import CleanConfig
from llamaforge.data.clean.quality import rule_names
from llamaforge.data.clean.stages import TOX_BINS


def _prefixed(c: Counter, prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in sorted(c.items()) if k.startswith(prefix)}


def steps_summary(c: Counter, cfg: CleanConfig, pass1: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    s["read"] = {"records": c["read.records"], "docs": c["read.docs"], "bad": c["read.bad"],
                 "chars": c["read.chars"]}
    s["normalize"] = {"enabled": cfg.normalize.enabled, "docs_changed": c["normalize.changed"]}
    for step in ("dedup", "neardup", "language", "quality", "toxicity", "privacy"):
        sec = getattr(cfg, step)
        s[step] = {"enabled": sec.enabled, "action": sec.action, "in": c[f"{step}.in"],
                   "dropped": c[f"{step}.dropped"], "flagged": c[f"{step}.flagged"]}
        s[step]["out"] = s[step]["in"] - s[step]["dropped"]
    s["dedup"].update({
        "exact_duplicates": pass1.get("exact_duplicates", 0),
        "boilerplate": {**pass1.get("boilerplate", {}), "docs_touched": c["dedup.boilerplate_docs"],
                        "lines_removed": c["dedup.boilerplate_lines"], "docs_emptied": c["dedup.dropped_emptied"]},
    })
    s["neardup"].update({"clusters": pass1.get("clusters", {}), "index": pass1.get("index", {})})
    s["language"]["languages"] = dict(sorted(_prefixed(c, "language.lang.").items(), key=lambda kv: -kv[1]))
    failed = _prefixed(c, "quality.rule.")
    first = _prefixed(c, "quality.first.")
    s["quality"]["rules"] = {r: {"failed": failed.get(r, 0), "dropped": first.get(r, 0)}
                             for r in rule_names(cfg.quality)}
    n_tox = c["toxicity.in"]
    s["toxicity"].update({
        "threshold": cfg.toxicity.threshold,
        "mean": (c["toxicity.sum"] / n_tox) if n_tox else None,
        "at_or_above_threshold": c["toxicity.at_or_above_threshold"],
        "share_at_or_above_threshold": (c["toxicity.at_or_above_threshold"] / n_tox) if n_tox else None,
        "histogram": {"bin_width": 1 / TOX_BINS, "counts": [c[f"toxicity.bin.{i}"] for i in range(TOX_BINS)]},
    })
    s["privacy"].update({
        "dropped_blocklist": c["privacy.dropped_blocklist"], "dropped_pii_dense": c["privacy.dropped_pii_dense"],
        "blocked_domains": _prefixed(c, "privacy.blocked_domain."), "docs_without_url_field": c["privacy.no_url_field"],
        "docs_with_pii": c["privacy.docs_with_pii"], "pii": _prefixed(c, "privacy.pii."),
        "pii_action": "scrubbed" if cfg.privacy.scrub else "counted",
    })
    s["writer"] = {"docs": c["writer.docs"], "bytes": c["writer.bytes"], "chars": c["writer.chars"]}
    return s


def timing_summary(c: Counter, extra: dict[str, float]) -> dict[str, Any]:
    """CPU seconds per step (summed over workers) and each step's share of the total."""
    t = {k[5:]: float(v) for k, v in c.items() if k.startswith("time.")}
    t.update(extra)
    total = sum(t.values()) or 1.0
    return {"seconds": {k: round(v, 3) for k, v in sorted(t.items(), key=lambda kv: -kv[1])},
            "share": {k: round(v / total, 4) for k, v in sorted(t.items(), key=lambda kv: -kv[1])}}


def funnel_table(s: dict[str, Any]) -> str:
    rows = [("read", s["read"]["records"], s["read"]["bad"], 0, s["read"]["docs"])]
    for step in ("dedup", "neardup", "language", "quality", "toxicity", "privacy"):
        d = s[step]
        if d["enabled"]:
            rows.append((f"{step} ({d['action']})", d["in"], d["dropped"], d["flagged"], d["out"]))
    rows.append(("written", s["writer"]["docs"], 0, 0, s["writer"]["docs"]))
    w = max(len(r[0]) for r in rows)
    lines = [f"{'step'.ljust(w)}  {'in':>10}  {'dropped':>10}  {'flagged':>10}  {'out':>10}"]
    lines += [f"{r[0].ljust(w)}  {r[1]:>10,}  {r[2]:>10,}  {r[3]:>10,}  {r[4]:>10,}" for r in rows]
    return "\n".join(lines)
