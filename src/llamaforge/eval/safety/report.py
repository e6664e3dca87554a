"""The suite's report: results.json, report.md (one table per benchmark, one column per model)
and plots/<benchmark>.png (grouped bars, one colour per model)."""

from __future__ import annotations

import math
from pathlib import Path

from llamaforge.io import atomic_file, atomic_write_json, atomic_write_text


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    return "-" if v is None else str(v)


def markdown(results: dict[str, dict[str, dict]], settings: dict | None = None) -> str:
    """results: {model: {benchmark: {"metrics": {...}, ...}}} -> Markdown tables."""
    models = list(results)
    benches: list[str] = []
    for per_model in results.values():
        benches += [b for b in per_model if b not in benches]
    lines = ["# Safety and bias evaluation", ""]
    if settings:
        lines += ["Decoding: " + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    for b in benches:
        lines += [f"## {b}", ""]
        notes = {results[m][b].get("classifier") for m in models if b in results[m]} - {None}
        lines += [f"Classifier: {n}" for n in notes] + ([""] if notes else [])
        metric_names: list[str] = []
        for m in models:
            metric_names += [k for k in results[m].get(b, {}).get("metrics", {}) if k not in metric_names]
        lines.append("| metric | " + " | ".join(models) + " |")
        lines.append("|---|" + "---|" * len(models))
        for k in metric_names:
            row = [_fmt(results[m].get(b, {}).get("metrics", {}).get(k)) for m in models]
            lines.append(f"| {k} | " + " | ".join(row) + " |")
        lines.append("| n | " + " | ".join(_fmt(results[m].get(b, {}).get("n")) for m in models) + " |")
        lines.append("")
    return "\n".join(lines)


def plots(results: dict[str, dict[str, dict]], out_dir: Path) -> list[Path]:
    """One grouped bar chart per benchmark; skipped (empty list) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    models = list(results)
    written = []
    benches = sorted({b for r in results.values() for b in r})
    for b in benches:
        names = sorted({k for m in models for k in results[m].get(b, {}).get("metrics", {})})
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) * len(models) + 2), 3.5))
        width = 0.8 / max(1, len(models))
        for j, m in enumerate(models):
            vals = [results[m].get(b, {}).get("metrics", {}).get(k, float("nan")) for k in names]
            ax.bar([i + j * width for i in range(len(names))], vals, width, label=m)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=45, ha="right", fontsize=7)
        ax.set_title(b)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{b}.png"
        with atomic_file(path, "wb") as f:
            fig.savefig(f, format="png", dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def write_report(out_dir: str | Path, results: dict[str, dict[str, dict]], settings: dict | None = None
                 ) -> dict[str, Path]:
    out = Path(out_dir)
    atomic_write_json(out / "results.json", {"settings": settings, "models": results})
    atomic_write_text(out / "report.md", markdown(results, settings))
    pngs = plots(results, out / "plots")
    return {"json": out / "results.json", "markdown": out / "report.md", **{p.stem: p for p in pngs}}
