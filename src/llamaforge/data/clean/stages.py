"""What the worker processes do with one batch of raw records.

Pass 1 (`signatures`): parse, normalize, and hash: document hash, MinHash signature, line hashes.
Pass 2 (`filter_batch`): parse, normalize, then every step in order, and serialize the survivors.
Both are deterministic, so a batch re-done after a crash gives the same bytes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import numpy as np

from llamaforge.data.clean import dedup, language, privacy, quality, toxicity
from llamaforge.data.clean.config import CleanConfig
from llamaforge.data.clean.normalize import normalize_text
from llamaforge.data.sources import BadRecordError, BadRecords, RawBatch, bad_error, parse_payload, record_bad

_W: dict[str, Any] = {}  # per-process state set by init_worker
TOX_BINS = 20


def load_models(cfg: CleanConfig) -> None:
    """Load the classifiers the config needs (a few seconds, once per process)."""
    if cfg.language.enabled:
        language.identifier()
    if cfg.toxicity.enabled:
        toxicity._predict()


def init_worker(cfg: CleanConfig, boilerplate: np.ndarray | None = None,
                blocklist: frozenset[str] | None = None, models: bool = False) -> None:
    language.limit_threads()
    if models:
        load_models(cfg)
    _W.clear()
    _W.update(cfg=cfg, boilerplate=boilerplate if boilerplate is not None else np.zeros(0, np.uint64),
              blocklist=blocklist or frozenset(), signer=None)
    if cfg.neardup.enabled:
        from llamaforge.data.clean.neardup import Signer

        _W["signer"] = Signer(cfg.neardup)


def _parse(batch: RawBatch, i: int, cfg: CleanConfig, bad: BadRecords | None):
    try:
        return parse_payload(batch.kind, batch.payloads[i], cfg.read.text_field)
    except BadRecordError as e:
        if not cfg.read.skip_bad:
            raise bad_error(batch.source, batch.kind, batch.lines[i], e) from None
        record_bad(bad, batch.source, batch.kind, batch.lines[i], e)
        return None


def signatures(batch: RawBatch) -> dict[str, Any]:
    """Pass 1: per record, ok flag, document hash, signature row (-1: no words) and line hashes."""
    cfg: CleanConfig = _W["cfg"]
    n = len(batch.payloads)
    ok = np.zeros(n, dtype=bool)
    hashes = np.zeros(n, dtype=np.uint64)
    sig_row = np.full(n, -1, dtype=np.int64)
    sigs: list[np.ndarray] = []
    lines: list[np.ndarray] = []
    line_counts = np.zeros(n, dtype=np.int64)
    want_lines = cfg.dedup.enabled and cfg.dedup.boilerplate
    tick = time.process_time
    t = Counter()
    for i in range(n):
        t0 = tick()
        parsed = _parse(batch, i, cfg, None)
        if parsed is None:
            continue
        text = normalize_text(parsed[0], cfg.normalize)
        ok[i] = True
        t1 = tick()
        t["pass1_read_normalize"] += t1 - t0
        if cfg.dedup.enabled:
            hashes[i] = dedup.doc_hash(text)
        if want_lines:
            lh = dedup.unique_line_hashes(text, cfg.dedup.boilerplate_min_chars)
            lines.append(lh)
            line_counts[i] = lh.size
        t2 = tick()
        t["pass1_dedup_hashes"] += t2 - t1
        if _W["signer"] is not None:
            sig = _W["signer"].signature(text)
            if sig is not None:
                sig_row[i] = len(sigs)
                sigs.append(sig)
        t["pass1_minhash"] += tick() - t2
    return {
        "ok": ok, "hashes": hashes, "sig_row": sig_row,
        "sigs": np.stack(sigs) if sigs else np.zeros((0, cfg.neardup.num_perm), np.uint32),
        "lines": np.concatenate(lines) if lines else np.zeros(0, np.uint64), "line_counts": line_counts,
        "time": t,
    }


def _flag(ann: dict, name: str) -> None:
    ann.setdefault("flags", []).append(name)


def filter_batch(task: tuple[RawBatch, dict[int, tuple]]) -> dict[str, Any]:
    """Pass 2: run every step on the batch; returns the output JSONL bytes and the counts.

    `task[1]` maps a record's position in the batch to its duplicate verdict from pass 1:
    ("exact",) or ("near", representative doc index, similarity).
    """
    batch, dups = task
    cfg: CleanConfig = _W["cfg"]
    c: Counter = Counter()
    bad = BadRecords()
    tick = time.process_time  # CPU seconds: step shares stay right on a busy machine
    alive: list[list] = []  # [text, fields, annotations, location]
    for i in range(len(batch.payloads)):
        c["read.records"] += 1
        t0 = tick()
        parsed = _parse(batch, i, cfg, bad)
        t1 = tick()
        c["time.read"] += t1 - t0
        if parsed is None:
            c["read.bad"] += 1
            continue
        text, fields = parsed
        c["read.docs"] += 1
        c["read.chars"] += len(text)
        if cfg.normalize.enabled:
            new = normalize_text(text, cfg.normalize)
            c["normalize.changed"] += new != text
            text = new
        t2 = tick()
        c["time.normalize"] += t2 - t1
        ann: dict[str, Any] = {}
        verdict = dups.get(i)
        if cfg.dedup.enabled:
            c["dedup.in"] += 1
            if verdict and verdict[0] == "exact":
                if cfg.dedup.action == "drop":
                    c["dedup.dropped"] += 1
                    continue
                c["dedup.flagged"] += 1
                _flag(ann, "exact_duplicate")
            if cfg.dedup.boilerplate and _W["boilerplate"].size:
                stripped, nlines = dedup.remove_boilerplate(text, _W["boilerplate"], cfg.dedup.boilerplate_min_chars)
                if nlines:
                    c["dedup.boilerplate_docs"] += 1
                    c["dedup.boilerplate_lines"] += nlines
                    ann["boilerplate_lines"] = nlines
                    if cfg.dedup.action == "drop":
                        text = stripped
                        if not text:
                            c["dedup.dropped_emptied"] += 1
                            c["dedup.dropped"] += 1
                            continue
        t3 = tick()
        c["time.dedup"] += t3 - t2
        if cfg.neardup.enabled:
            c["neardup.in"] += 1
            if verdict and verdict[0] == "near":
                if cfg.neardup.action == "drop":
                    c["neardup.dropped"] += 1
                    continue
                c["neardup.flagged"] += 1
                _flag(ann, "near_duplicate")
                ann["near_duplicate_of"] = int(verdict[1])
                sim = float(verdict[2])
                ann["near_duplicate_similarity"] = None if sim != sim else round(sim, 4)  # NaN: not verified
        t4 = tick()
        c["time.neardup"] += t4 - t3
        if cfg.language.enabled:
            c["language.in"] += 1
            lang, score = language.classify(text, cfg.language.max_chars)
            ann["language"], ann["language_score"] = lang, round(score, 4)
            c[f"language.lang.{lang}"] += 1
            if lang not in cfg.language.languages or score < cfg.language.min_score:
                if cfg.language.action == "drop":
                    c["language.dropped"] += 1
                    continue
                c["language.flagged"] += 1
                _flag(ann, "language")
        t5 = tick()
        c["time.language"] += t5 - t4
        if cfg.quality.enabled:
            c["quality.in"] += 1
            fails = quality.failed_rules(text, cfg.quality)
            for r in fails:
                c[f"quality.rule.{r}"] += 1
            if fails:
                if cfg.quality.action == "drop":
                    c["quality.dropped"] += 1
                    c[f"quality.first.{fails[0]}"] += 1
                    c["time.quality"] += tick() - t5
                    continue
                c["quality.flagged"] += 1
                for r in fails:
                    _flag(ann, f"quality:{r}")
        c["time.quality"] += tick() - t5
        alive.append([text, fields, ann, batch.lines[i]])
    t6 = tick()
    if cfg.toxicity.enabled and alive:
        scores = toxicity.score_documents([a[0] for a in alive], cfg.toxicity.batch_lines)
        kept = []
        for a, s in zip(alive, scores):
            c["toxicity.in"] += 1
            a[2]["toxicity"] = round(s, 4)
            c[f"toxicity.bin.{min(int(s * TOX_BINS), TOX_BINS - 1)}"] += 1
            c["toxicity.sum"] += s
            if s >= cfg.toxicity.threshold:
                c["toxicity.at_or_above_threshold"] += 1
                if cfg.toxicity.action == "drop":
                    c["toxicity.dropped"] += 1
                    continue
                c["toxicity.flagged"] += 1
                _flag(a[2], "toxicity")
            kept.append(a)
        alive = kept
    t7 = tick()
    c["time.toxicity"] += t7 - t6
    out: list[bytes] = []
    pcfg = cfg.privacy
    wcfg = cfg.writer
    for text, fields, ann, line in alive:
        t8 = tick()
        if pcfg.enabled:
            c["privacy.in"] += 1
            if _privacy(text, fields, ann, c, pcfg) == "drop":
                c["time.privacy"] += tick() - t8
                continue
            if pcfg.pii:
                text, counts = privacy.scrub(text, pcfg.pii, replace=pcfg.scrub)
                if counts:
                    ann["pii"] = counts
                    c["privacy.docs_with_pii"] += 1
                    for k, v in counts.items():
                        c[f"privacy.pii.{k}"] += v
                    n_words = len(text.split()) or 1
                    if pcfg.max_pii_per_100_words and 100 * sum(counts.values()) / n_words > pcfg.max_pii_per_100_words:
                        if pcfg.action == "drop":
                            c["privacy.dropped_pii_dense"] += 1
                            c["privacy.dropped"] += 1
                            c["time.privacy"] += tick() - t8
                            continue
                        c["privacy.flagged"] += 1
                        _flag(ann, "pii_dense")
        t9 = tick()
        c["time.privacy"] += t9 - t8
        rec = {cfg.read.text_field: text, **fields}
        if wcfg.annotate and ann:
            prev = rec.get(wcfg.annotation_field)
            rec[wcfg.annotation_field] = {**prev, **ann} if isinstance(prev, dict) else ann
        if wcfg.provenance:
            rec["source"] = f"{batch.source}:{line}" if batch.kind != "row" else f"{batch.source}#row{line}"
        out.append((json.dumps(rec, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
        c["writer.docs"] += 1
        c["writer.chars"] += len(text)
        c["time.serialize"] += tick() - t9
    blob = b"".join(out)
    c["writer.bytes"] += len(blob)
    return {"blob": blob, "docs": len(out), "counts": c, "bad": bad}


def _privacy(text: str, fields: dict, ann: dict, c: Counter, pcfg) -> str | None:
    """Blocklist check; "drop" when the document must go."""
    bl = _W["blocklist"]
    if not bl:
        return None
    url = fields.get(pcfg.url_field)
    hit = privacy.blocked(privacy.host_of(url), bl) if isinstance(url, str) else None
    if url is None:
        c["privacy.no_url_field"] += 1
    if hit is None and pcfg.scan_text_urls:
        hit = privacy.blocked_url_in_text(text, bl)
    if hit is None:
        return None
    c[f"privacy.blocked_domain.{hit}"] += 1
    if pcfg.action == "drop":
        c["privacy.dropped_blocklist"] += 1
        c["privacy.dropped"] += 1
        return "drop"
    c["privacy.flagged"] += 1
    _flag(ann, f"blocklist:{hit}")
    return None
