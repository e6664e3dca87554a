"""`llamaforge data report`: the pretraining-data analysis of Llama 2 section 4.1 on any corpus.

Documents, words (and tokens with --tokenizer), a length histogram, languages, the share of
documents with he/she/they pronouns, demographic descriptor frequencies by axis, toxicity (mean
line score per document), PII counts and duplicates. Writes report.json, report.md and PNG plots.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np

from llamaforge.data.clean.runner import Executor, Progress
from llamaforge.data.sources import (
    BadRecordError,
    BadRecords,
    RawBatch,
    bad_error,
    expand_inputs,
    iter_raw_batches,
    parse_payload,
    record_bad,
)
from llamaforge.errors import UserError
from llamaforge.io import atomic_write_json, atomic_write_text, write_manifest

EPILOG = """\
example:
  llamaforge data report clean/ --out reports/clean --workers 4
  llamaforge data report raw/*.jsonl.gz --out reports/raw --max-docs 100000 --tokenizer tokenizer.model
"""
LEN_EDGES = [0, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, float("inf")]
TOX_BINS = 20
_R: dict[str, Any] = {}


def _init(opts: dict[str, Any]) -> None:
    from llamaforge.data.clean.language import limit_threads

    limit_threads()
    _R.clear()
    _R.update(opts)
    _R["sp"] = None
    if opts.get("tokenizer"):
        import sentencepiece as spm

        _R["sp"] = spm.SentencePieceProcessor(model_file=opts["tokenizer"])


def _pii_counts(text: str) -> Counter:
    from llamaforge.data.clean.privacy import PLACEHOLDERS, scrub

    c: Counter = Counter(scrub(text, list(PLACEHOLDERS), replace=False)[1])
    for kind, ph in PLACEHOLDERS.items():
        n = text.count(ph)
        if n:
            c[f"{kind} (scrubbed)"] += n
    return c


def analyse_batch(batch: RawBatch) -> dict[str, Any]:
    """Per-batch partial aggregates (merged in input order by the main process)."""
    from llamaforge.data.clean import stats

    c: Counter = Counter()
    bad = BadRecords()
    texts: list[str] = []
    tox_given: list[float | None] = []
    hashes: list[int] = []
    for i, payload in enumerate(batch.payloads):
        try:
            text, fields = parse_payload(batch.kind, payload, _R["text_field"])
        except BadRecordError as e:
            if not _R["skip_bad"]:
                raise bad_error(batch.source, batch.kind, batch.lines[i], e) from None
            record_bad(bad, batch.source, batch.kind, batch.lines[i], e)
            continue
        c["docs"] += 1
        c["chars"] += len(text)
        toks = stats.tokens(text)
        n_words = len(text.split())
        c["words"] += n_words
        c[f"len.{np.searchsorted(LEN_EDGES, n_words, side='right') - 1}"] += 1
        if _R["sp"] is not None:
            c["tokens"] += len(_R["sp"].encode(text))
        pron = stats.pronoun_counts(toks)
        for g, n in pron.items():
            c[f"pron_docs.{g}"] += 1
            c[f"pron_count.{g}"] += n
        if pron:
            c["pron_docs.any"] += 1
        axes_seen = set()
        for axis, term in stats.descriptor_mentions(toks):
            c[f"term_docs.{axis}\t{term}"] += 1
            axes_seen.add(axis)
        for axis in axes_seen:
            c[f"axis_docs.{axis}"] += 1
        if _R["language"]:
            from llamaforge.data.clean.language import classify

            lang, score = classify(text)
            c[f"lang.{lang if score >= _R['lang_threshold'] else 'unknown'}"] += 1
        for k, v in _pii_counts(text).items():
            c[f"pii.{k}"] += v
        ann = fields.get("annotations") if isinstance(fields.get("annotations"), dict) else {}
        texts.append(text)
        tox_given.append(ann.get("toxicity") if isinstance(ann.get("toxicity"), (int, float)) else None)
        hashes.append(int.from_bytes(hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8", "surrogatepass"),
                                                     digest_size=8).digest(), "little"))
    if _R["toxicity"] and texts:
        from llamaforge.data.clean.toxicity import score_documents

        todo = [i for i, t in enumerate(tox_given) if t is None]
        scored = score_documents([texts[i] for i in todo]) if todo else []
        for i, s in zip(todo, scored):
            tox_given[i] = s
        for s in tox_given:
            c[f"tox.{min(int(s * TOX_BINS), TOX_BINS - 1)}"] += 1
            c["tox.sum"] += s
            c["tox.high"] += s >= 0.5
    return {"counts": c, "bad": bad, "hashes": hashes}


def _prefixed(c: Counter, p: str) -> dict[str, Any]:
    return {k[len(p):]: v for k, v in c.items() if k.startswith(p)}


def _clean_manifests(inputs: list[str]) -> list[dict[str, Any]]:
    found = []
    for spec in inputs:
        m = Path(spec) / "manifest.json"
        if m.is_file():
            try:
                data = json.loads(m.read_text("utf-8"))
            except json.JSONDecodeError:
                continue
            if data.get("command") == "data clean":
                found.append(data)
    return found


def build_report(c: Counter, exact_dups: int, manifests: list[dict], bad: BadRecords, opts: dict) -> dict[str, Any]:
    from llamaforge.data.clean.stats import descriptor_axes

    docs = c["docs"]
    share = (lambda n: n / docs) if docs else (lambda n: 0.0)
    axes = {}
    for axis in descriptor_axes():
        n_axis = c[f"axis_docs.{axis}"]
        terms = {k.split("\t", 1)[1]: v for k, v in _prefixed(c, "term_docs.").items() if k.split("\t", 1)[0] == axis}
        axes[axis] = {"docs": n_axis, "share_of_docs": share(n_axis),
                      "terms": {t: {"docs": n, "share_of_axis_docs": n / n_axis if n_axis else 0.0}
                                for t, n in sorted(terms.items(), key=lambda kv: -kv[1])}}
    n_tox = sum(c[f"tox.{i}"] for i in range(TOX_BINS))
    langs = dict(sorted(_prefixed(c, "lang.").items(), key=lambda kv: -kv[1]))
    removed: dict[str, int] = {}
    clusters = {"clusters": 0, "largest_cluster": 0}
    clean_bad: list[dict] = []
    for m in manifests:
        for step in ("dedup", "neardup"):
            removed[step] = removed.get(step, 0) + m.get("steps", {}).get(step, {}).get("dropped", 0)
        cl = m.get("steps", {}).get("neardup", {}).get("clusters", {})
        clusters["clusters"] += cl.get("clusters", 0)
        clusters["largest_cluster"] = max(clusters["largest_cluster"], cl.get("largest_cluster", 0))
        clean_bad += m.get("bad_records", {}).get("examples", [])
    return {
        "documents": docs, "words": c["words"], "tokens": c["tokens"] if opts.get("tokenizer") else None,
        "chars": c["chars"], "mean_words_per_doc": c["words"] / docs if docs else 0.0,
        "length_histogram": {"unit": "words", "edges": [e if e != float("inf") else None for e in LEN_EDGES],
                             "counts": [c[f"len.{i}"] for i in range(len(LEN_EDGES) - 1)]},
        "languages": {"threshold": opts["lang_threshold"], "counts": langs,
                      "share": {k: share(v) for k, v in langs.items()}} if opts["language"] else None,
        "pronouns": {g: {"docs": c[f"pron_docs.{g}"], "share_of_docs": share(c[f"pron_docs.{g}"]),
                         "occurrences": c[f"pron_count.{g}"]} for g in ("he", "she", "they")}
        | {"any": {"docs": c["pron_docs.any"], "share_of_docs": share(c["pron_docs.any"])}},
        "demographic_descriptors": axes,
        "toxicity": {"docs_scored": n_tox, "mean": c["tox.sum"] / n_tox if n_tox else None,
                     "docs_at_or_above_0.5": c["tox.high"],
                     "share_at_or_above_0.5": c["tox.high"] / n_tox if n_tox else None,
                     "histogram": {"bin_width": 1 / TOX_BINS, "counts": [c[f"tox.{i}"] for i in range(TOX_BINS)]}}
        if opts["toxicity"] else None,
        "pii": dict(sorted(_prefixed(c, "pii.").items())),
        "duplicates": {"exact_duplicates_in_corpus": exact_dups,
                       "removed_by_data_clean": removed or None,
                       "near_duplicate_clusters": clusters if manifests else None},
        "bad_records": bad.to_dict(),
        "bad_records_skipped_by_data_clean": clean_bad if manifests else None,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def render_markdown(r: dict[str, Any], inputs: list[str]) -> str:
    L = [f"# Corpus report: {', '.join(inputs)}", ""]
    L += ["| measure | value |", "|---|---|", f"| documents | {r['documents']:,} |", f"| words | {r['words']:,} |"]
    if r["tokens"] is not None:
        L.append(f"| tokens | {r['tokens']:,} |")
    L += [f"| mean words per document | {r['mean_words_per_doc']:.1f} |",
          f"| exact duplicate documents | {r['duplicates']['exact_duplicates_in_corpus']:,} |"]
    if r["duplicates"]["removed_by_data_clean"]:
        for k, v in r["duplicates"]["removed_by_data_clean"].items():
            L.append(f"| removed by `data clean` ({k}) | {v:,} |")
        cl = r["duplicates"]["near_duplicate_clusters"]
        L.append(f"| near-duplicate clusters (largest) | {cl['clusters']:,} ({cl['largest_cluster']}) |")
    L.append(f"| bad records skipped | {r['bad_records']['count']:,} |")
    L += ["", "## Length (words per document)", "", "| words | documents |", "|---|---|"]
    edges = r["length_histogram"]["edges"]
    for i, n in enumerate(r["length_histogram"]["counts"]):
        hi = edges[i + 1]
        L.append(f"| {edges[i]}-{'' if hi is None else hi - 1} | {n:,} |")
    L.append("\n![length histogram](length_hist.png)")
    if r["languages"]:
        L += ["", f"## Languages (langid, probability >= {r['languages']['threshold']}, else unknown)", "",
              "| language | documents | share |", "|---|---|---|"]
        L += [f"| {k} | {v:,} | {_pct(r['languages']['share'][k])} |" for k, v in r["languages"]["counts"].items()]
        L.append("\n![languages](languages.png)")
    L += ["", "## Gender pronouns (Llama 2 Table 9a)", "", "| group | documents | share of documents | occurrences |",
          "|---|---|---|---|"]
    for g, d in r["pronouns"].items():
        L.append(f"| {g} | {d['docs']:,} | {_pct(d['share_of_docs'])} | {d.get('occurrences', '')} |")
    L += ["", "## Demographic descriptors (Llama 2 Table 9c)", "",
          "Share of documents mentioning the axis; each term's share of the documents that mention the axis.", ""]
    for axis, d in r["demographic_descriptors"].items():
        top = list(d["terms"].items())[:8]
        terms = ", ".join(f"{t} {_pct(v['share_of_axis_docs'])}" for t, v in top) or "-"
        L.append(f"- **{axis}**: {d['docs']:,} documents ({_pct(d['share_of_docs'])}); {terms}")
    if r["toxicity"]:
        t = r["toxicity"]
        L += ["", "## Toxicity (mean line score per document, alt-profanity-check)", "",
              f"- documents scored: {t['docs_scored']:,}; mean {t['mean'] or 0:.4f}; "
              f">= 0.5: {t['docs_at_or_above_0.5']:,} ({_pct(t['share_at_or_above_0.5'])})",
              "\n![toxicity histogram](toxicity_hist.png)"]
    L += ["", "## PII found", "", "| kind | occurrences |", "|---|---|"]
    L += [f"| {k} | {v:,} |" for k, v in r["pii"].items()] or ["| none | 0 |"]
    skipped = (r["bad_records_skipped_by_data_clean"] or []) + r["bad_records"]["examples"]
    if skipped:
        L += ["", "## Bad records skipped (first ones)", "", "| file | line | reason |", "|---|---|---|"]
        L += [f"| {e['file']} | {e['line'] or ''} | {e['reason']} |" for e in skipped[:20]]
    return "\n".join(L) + "\n"


def plot(r: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    edges = r["length_histogram"]["edges"]
    labels = [f"{edges[i]}+" for i in range(len(edges) - 1)]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(labels, r["length_histogram"]["counts"], color="#4c72b0")
    ax.set(xlabel="words per document", ylabel="documents", title="Document length")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out / "length_hist.png", dpi=100)
    plt.close(fig)
    made.append("length_hist.png")
    if r["toxicity"]:
        counts = r["toxicity"]["histogram"]["counts"]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar([i / TOX_BINS for i in range(TOX_BINS)], counts, width=1 / TOX_BINS, align="edge", color="#c44e52")
        ax.axvline(0.5, color="black", linestyle="--", linewidth=1)
        ax.set(xlabel="toxicity (mean line probability)", ylabel="documents", title="Toxicity", yscale="log"
               if max(counts, default=0) > 0 else "linear")
        fig.tight_layout()
        fig.savefig(out / "toxicity_hist.png", dpi=100)
        plt.close(fig)
        made.append("toxicity_hist.png")
    if r["languages"]:
        items = list(r["languages"]["counts"].items())[:20]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar([k for k, _ in items], [v for _, v in items], color="#55a868")
        ax.set(xlabel="language", ylabel="documents", title="Languages (top 20)")
        fig.tight_layout()
        fig.savefig(out / "languages.png", dpi=100)
        plt.close(fig)
        made.append("languages.png")
    return made


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamaforge data report", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="DIR_OR_FILES", help="a corpus: files, directories or globs")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--text-field", default="text")
    p.add_argument("--txt-mode", choices=("file", "blocks"), default="file")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records, count and list them")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--max-docs", type=int, default=0, help="analyse only the first N documents (0: all)")
    p.add_argument("--tokenizer", help="a SentencePiece model: also count tokens")
    p.add_argument("--no-language", action="store_true", help="skip language identification")
    p.add_argument("--no-toxicity", action="store_true", help="skip toxicity scoring")
    p.add_argument("--lang-threshold", type=float, default=0.5)
    p.add_argument("--no-progress", action="store_true")
    return p


def report(inputs: list[str], out: str | Path, workers: int = 1, progress: bool = False, max_docs: int = 0,
           **opts: Any) -> dict[str, Any]:
    t0 = time.time()
    out = Path(out)
    files = expand_inputs(inputs)
    o = {"text_field": "text", "skip_bad": False, "language": True, "toxicity": True, "lang_threshold": 0.5,
         "tokenizer": None, "txt_mode": "file", **opts}
    if o["tokenizer"] and not Path(o["tokenizer"]).is_file():
        raise UserError(f"--tokenizer {o['tokenizer']}: not found")
    if workers > 1:  # loaded once here, shared by the forked workers
        from llamaforge.data.clean.language import identifier
        from llamaforge.data.clean.toxicity import _predict

        if o["language"]:
            identifier()
        if o["toxicity"]:
            _predict()
    bad = BadRecords()
    seen: set[int] = set()
    exact = 0
    counts: Counter = Counter()
    bar = Progress("report", sum(f.stat().st_size for f in files), progress)
    meta: deque = deque()

    def batches():
        n = 0
        for f in files:
            for b in iter_raw_batches(f, txt_mode=o["txt_mode"], skip_bad=o["skip_bad"], bad=bad):
                if max_docs and n + len(b.payloads) > max_docs:
                    b.payloads, b.lines = b.payloads[:max_docs - n], b.lines[:max_docs - n]
                n += len(b.payloads)
                if b.payloads:
                    meta.append((b.source, b.offset))
                    yield b
                if max_docs and n >= max_docs:
                    return

    ex = Executor(workers, _init, (o,))
    ok = False
    try:
        for res in ex.map(analyse_batch, batches()):
            counts.update(res["counts"])
            bad.merge(res["bad"])
            for h in res["hashes"]:
                if h in seen:
                    exact += 1
                else:
                    seen.add(h)
            source, offset = meta.popleft()
            bar.advance(source, offset, res["counts"]["docs"], res["counts"]["chars"])
        ok = True
    finally:
        ex.close(ok)
        bar.close()
    r = build_report(counts, exact, _clean_manifests(inputs), bad, o)
    out.mkdir(parents=True, exist_ok=True)
    r["plots"] = plot(r, out)
    atomic_write_json(out / "report.json", r)
    atomic_write_text(out / "report.md", render_markdown(r, inputs))
    write_manifest(out, "data report", config={k: v for k, v in o.items()}, inputs=files,
                   wall_time_s=round(time.time() - t0, 3), documents=r["documents"])
    return r


def main(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    r = report(a.inputs, a.out, workers=max(1, a.workers), progress=not a.no_progress, max_docs=a.max_docs,
               text_field=a.text_field, skip_bad=a.skip_bad, language=not a.no_language,
               toxicity=not a.no_toxicity, lang_threshold=a.lang_threshold, tokenizer=a.tokenizer,
               txt_mode=a.txt_mode)
    p = r["pronouns"]
    print(f"{r['documents']:,} documents, {r['words']:,} words; he {_pct(p['he']['share_of_docs'])}, "
          f"she {_pct(p['she']['share_of_docs'])}, they {_pct(p['they']['share_of_docs'])} of documents")
    if r["toxicity"]:
        print(f"toxicity >= 0.5: {_pct(r['toxicity']['share_at_or_above_0.5'])} of documents")
    print(f"report: {Path(a.out) / 'report.md'}")
    return 0
