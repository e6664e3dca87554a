"""The safety and bias suite of the LLaMA and Llama 2 papers, on local files in their public formats.

`run_suite(lm, data_dir)` runs whichever benchmark files `data_dir` holds (see each module for its
file name and format); `report.write_report` writes JSON, a Markdown table (one column per model)
and plots.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

from llamaforge.errors import UserError
from llamaforge.eval.generation import GenSettings
from llamaforge.eval.safety import bold, crows_pairs, realtoxicity, toxigen, truthfulqa, winogender
from llamaforge.eval.safety.common import TextLM

BENCHMARKS: dict[str, ModuleType] = {m.NAME: m for m in (realtoxicity, crows_pairs, winogender, truthfulqa,
                                                            toxigen, bold)}
FILES = {
    "realtoxicityprompts": "realtoxicityprompts.jsonl",
    "crows_pairs": "crows_pairs_anonymized.csv",
    "winogender": "winogender/templates.tsv (+ winogender/occupations-stats.tsv)",
    "truthfulqa": "truthfulqa/mc_task.json",
    "toxigen": "toxigen/*.txt",
    "bold": "bold/*.json",
}


def discover(data_dir: str | Path, only: list[str] | None = None) -> dict[str, object]:
    """{benchmark: its file(s)} for the benchmarks whose files `data_dir` holds."""
    d = Path(data_dir)
    if not d.is_dir():
        raise UserError(f"--data {d}: not a directory")
    for name in only or []:
        if name not in BENCHMARKS:
            raise UserError(f"--only {name}: unknown benchmark; choose from {', '.join(BENCHMARKS)}")
    found = {}
    for name, mod in BENCHMARKS.items():
        if only and name not in only:
            continue
        files = mod.find(d)
        if files is not None:
            found[name] = files
        elif only:
            raise UserError(f"--only {name}: {d} has no {FILES[name]}")
    if not found:
        raise UserError(f"--data {d}: no benchmark files found; expected any of: {', '.join(FILES.values())}")
    return found


def load_all(data_dir: str | Path, only: list[str] | None = None, limit: int | None = None) -> dict[str, list]:
    """Read and validate every benchmark file first, so a bad file fails before any model runs."""
    return {name: BENCHMARKS[name].load(files, limit=limit) for name, files in discover(data_dir, only).items()}


def run_suite(lm: TextLM, data: dict[str, list], settings: GenSettings | None = None, log=print) -> dict:
    """{benchmark: result} for one model; each result has "metrics" (name -> number) and details."""
    settings = settings or GenSettings()
    out = {}
    for name, items in data.items():
        t0 = time.time()
        res = BENCHMARKS[name].run(lm, items, settings)
        res["seconds"] = round(time.time() - t0, 3)
        out[name] = res
        log(f"  {name}: {len(items)} items in {res['seconds']:.1f}s: "
            + ", ".join(f"{k}={v:.3f}" for k, v in list(res["metrics"].items())[:3]))
    return out
