"""`llamaforge card`: a model card assembled from the manifests along a model's lineage.

Every stage writes OUT/manifest.json with its command, config, inputs (paths with hashes) and, for
training runs, a summary and a `compute` record (device-hours, energy, carbon). Starting from a
checkpoint directory we follow the inputs back (checkpoint -> its run -> the run's init model and
data -> the data's tokenizer and corpus ...) and write MODEL_CARD.md and card.json: model details,
lineage, data, compute and carbon, evaluation results found along the way (or passed with --eval),
intended use and limitations (docs/RESPONSIBLE_USE.md says more).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from llamaforge.errors import UserError
from llamaforge.io import atomic_write_json, atomic_write_text, read_json

TRAINING = ("pretrain", "sft", "reward", "rlhf ppo", "rlhf rs")
WORLD_KEYS = ("skill_accuracy", "unsafe_compliance", "false_refusal", "instruction_obedience", "eval_reward")


def manifest_for(path: Path) -> Path | None:
    """The manifest describing how `path` was made: its own, or its directory's (a run's final/, a data file)."""
    for d in ((path, path.parent) if path.is_dir() else (path.parent,)):
        m = d / "manifest.json"
        if m.is_file():
            return m
    return None


def lineage(model: str | Path, max_depth: int = 32) -> list[dict[str, Any]]:
    """The manifests behind `model`, newest first (breadth-first over inputs; each manifest once)."""
    start = manifest_for(Path(model))
    if start is None:
        return []
    seen, queue, out = {start.resolve()}, [(start, 0)], []
    while queue:
        m, depth = queue.pop(0)
        man = read_json(m)
        if man is None:
            continue
        out.append({"dir": str(m.parent), "depth": depth, "manifest": man,
                    "result": read_json(m.parent / "result.json")})
        if depth >= max_depth:
            continue
        for inp in man.get("inputs") or []:
            p = Path(inp.get("path", ""))
            nxt = manifest_for(p) if p.exists() else None
            if nxt is not None and nxt.resolve() not in seen:
                seen.add(nxt.resolve())
                queue.append((nxt, depth + 1))
    return out


def _compute_rows(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    rows, total = [], {"device_hours": 0.0, "energy_mwh": 0.0, "kg_co2eq": 0.0}
    for e in entries:
        c = e["manifest"].get("compute")
        if not isinstance(c, dict) or "device_hours" not in c:
            continue
        rows.append({"stage": e["manifest"].get("command"), "dir": e["dir"], **c})
        for k in total:
            total[k] += float(c.get(k, 0.0))
    return rows, total


def _model_details(path: Path) -> dict[str, Any]:
    from llamaforge.checkpoint.native import CONFIG

    cfg = read_json(path / CONFIG) or {}
    args = cfg.get("model_args") or {}
    out: dict[str, Any] = {"path": str(path), "kind": cfg.get("kind"), "dtype": cfg.get("dtype"),
                           "trained_by": cfg.get("trained_by"), "args": args,
                           "tokenizer": (path / "tokenizer.model").is_file()}
    if args:
        from llamaforge.model.args import ModelArgs

        try:
            out["params"] = ModelArgs.from_dict(args).num_params()
        except (TypeError, ValueError, UserError):
            pass
    return out


def _eval_results(dirs: list[str]) -> list[dict[str, Any]]:
    out = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise UserError(f"--eval {d}: not a directory (give an evaluation output directory, e.g. from "
                            "`llamaforge eval safety --out DIR`)")
        man = read_json(d / "manifest.json") or {}
        report = d / "report.md"
        out.append({"dir": str(d), "command": man.get("command"),
                    "report_md": report.read_text(encoding="utf-8") if report.is_file() else None,
                    "results": read_json(d / "results.json")})
    return out


def build_card(model: str | Path, evals: list[str] | None = None, name: str | None = None) -> dict[str, Any]:
    path = Path(model)
    if not path.is_dir():
        raise UserError(f"{path}: not a checkpoint directory (give the model's directory, e.g. runs/sft/final)")
    entries = lineage(path)
    compute, total = _compute_rows(entries)
    data = [e for e in entries if e["manifest"].get("command") in ("data tokenize", "data clean", "data report",
                                                                      "tokenizer train", "demo corpus", "world make")]
    world = [{"stage": e["manifest"].get("command"), "dir": e["dir"],
              **{k: e["result"][k] for k in WORLD_KEYS if isinstance(e.get("result"), dict) and k in e["result"]}}
             for e in entries if isinstance(e.get("result"), dict)]
    return {"name": name or (path.parent.name if path.name == "final" else path.name),
            "model": _model_details(path), "lineage": [_lineage_row(e) for e in entries],
            "data": [_lineage_row(e) for e in data], "compute": compute, "compute_total": total,
            "world_eval": [w for w in world if len(w) > 2], "evaluations": _eval_results(evals or [])}


def _lineage_row(e: dict[str, Any]) -> dict[str, Any]:
    m = e["manifest"]
    s = m.get("summary") or {}
    return {"depth": e["depth"], "command": m.get("command"), "dir": e["dir"], "created": m.get("created"),
            "version": m.get("version"), "wall_time_s": m.get("wall_time_s"), "steps": s.get("steps"),
            "tokens_seen": s.get("tokens_seen"), "val_loss": s.get("val_loss"),
            "stats": m.get("stats") or {k: v for k, v in m.items() if k in ("docs", "counts", "bytes")},
            "inputs": [i.get("path") for i in m.get("inputs") or []]}


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


INTENDED_USE = """## Intended use
Research on training, aligning, evaluating and serving Llama-family models with llamaforge: reproducing
the recipes at small scale, comparing methods, testing infrastructure. Chat models from this pipeline
are assistants for the tasks their fine-tuning data covers, in the languages it covers.

## Out of scope
Deployment to end users without the evaluation and safeguards described in docs/RESPONSIBLE_USE.md;
any use that violates applicable law; high-stakes decisions (medical, legal, financial, hiring,
safety-critical control) made on the model's output; uses in languages or domains the data report
shows the model was not trained on.

## Limitations and risks
- A language model produces fluent text that can be false, outdated or unsafe; safety tuning lowers
  but does not remove the rate of harmful answers, and it can raise false refusals (both are measured
  above when the lineage has them).
- The model inherits the biases and toxicity of its pretraining data (see the data report when one is
  linked); the safety-suite results (CrowS-Pairs, WinoGender, BOLD, ToxiGen, TruthfulQA) are only as
  good as the prompts they use and do not cover every group, language or harm.
- Reward models are proxies: rejection sampling and PPO optimise their scores, not human judgement.
- Models trained by `make demo` are tiny and trained for minutes: they demonstrate the pipeline and
  must not be used as assistants.
"""


def to_markdown(card: dict[str, Any]) -> str:
    m = card["model"]
    a = m.get("args") or {}
    lines = [f"# Model card: {card['name']}", "", "## Model details",
             f"- Checkpoint: `{m['path']}` ({m.get('kind') or '?'}, {m.get('dtype') or '?'}), "
             f"trained by `{m.get('trained_by') or '?'}`",
             f"- Architecture: LLaMA decoder, {_fmt(m.get('params'), ',')} parameters; dim {a.get('dim')}, "
             f"{a.get('n_layers')} layers, {a.get('n_heads')} heads ({a.get('n_kv_heads')} key/value heads), "
             f"vocabulary {a.get('vocab_size')}, context {a.get('max_seq_len')} tokens, RoPE theta "
             f"{a.get('rope_theta')}",
             f"- Tokenizer: {'SentencePiece BPE, shipped as tokenizer.model' if m.get('tokenizer') else 'not found'}",
             "", "## Lineage (newest first)",
             "| # | stage | directory | created | steps | tokens | val loss | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(card["lineage"]):
        lines.append(f"| {i} | {r['command']} | `{r['dir']}` | {r['created'] or '-'} | {_fmt(r['steps'])} | "
                     f"{_fmt(r['tokens_seen'], ',')} | {_fmt(r['val_loss'], '.3f')} | "
                     f"{_fmt(r['wall_time_s'], '.0f')} s |")
    if not card["lineage"]:
        lines.append("| - | no manifest found next to this checkpoint | | | | | | |")
    lines += ["", "## Training data"]
    for r in card["data"]:
        st = r.get("stats") or {}
        keys = ("docs", "bytes", "train_tokens", "val_tokens")
        desc = ", ".join(f"{k} {_fmt(st[k], ',')}" for k in keys if k in st)
        ins = ", ".join(f"`{p}`" for p in r["inputs"][:5]) + (" ..." if len(r["inputs"]) > 5 else "")
        lines.append(f"- `{r['command']}` in `{r['dir']}`{': ' + desc if desc else ''}"
                     + (f"; inputs: {ins}" if ins else "; built in (no input files)"))
    if not card["data"]:
        lines.append("- No data manifest was found along the lineage.")
    t = card["compute_total"]
    lines += ["", "## Compute and carbon",
              "Formula (LLaMA section 6, Llama 2 section 2.2.1): MWh = device-hours x power (W) / 1000 x PUE / "
              "1000; tCO2eq = MWh x kg CO2eq per kWh.", "",
              "| stage | device | count | device-hours | power W | energy kWh | kg CO2eq |",
              "|---|---|---|---|---|---|---|"]
    for c in card["compute"]:
        lines.append(f"| {c['stage']} | {c.get('device_name')} ({c.get('unit')}) | {c.get('count')} | "
                     f"{c['device_hours']:.4g} | {_fmt(c.get('power_w'))} | {1000 * c.get('energy_mwh', 0):.4g} | "
                     f"{c.get('kg_co2eq', 0):.4g} |")
    lines.append(f"| **total** | | | {t['device_hours']:.4g} | | {1000 * t['energy_mwh']:.4g} | "
                 f"{t['kg_co2eq']:.4g} |")
    lines += ["", "## Evaluation"]
    if card["world_eval"]:
        lines += ["Built-in alignment world, held-out prompts (`llamaforge world`):", "",
                  "| stage | skill accuracy | unsafe compliance | false refusals | held-out reward |",
                  "|---|---|---|---|---|"]
        for w in card["world_eval"]:
            lines.append(f"| {w['stage']} | {_fmt(w.get('skill_accuracy'), '.1%')} | "
                         f"{_fmt(w.get('unsafe_compliance'), '.1%')} | {_fmt(w.get('false_refusal'), '.1%')} | "
                         f"{_fmt(w.get('eval_reward'), '.3f')} |")
    for ev in card["evaluations"]:
        lines += ["", f"### `{ev['command'] or 'evaluation'}` ({ev['dir']})", ""]
        if ev["report_md"]:
            lines.append(ev["report_md"].strip())
        elif ev["results"] is not None:
            lines += ["```json", json.dumps(ev["results"], indent=1, default=str)[:4000], "```"]
    if not card["world_eval"] and not card["evaluations"]:
        lines.append("No evaluation was found along the lineage; run `llamaforge eval safety` and "
                     "`llamaforge eval harness` and pass their output with --eval.")
    lines += ["", INTENDED_USE.strip(), "", "See docs/RESPONSIBLE_USE.md for the evaluation a release should "
              "pass before deployment.", ""]
    return "\n".join(lines)


def write_card(model: str | Path, out: str | Path | None = None, evals: list[str] | None = None,
               name: str | None = None) -> Path:
    card = build_card(model, evals, name)
    out = Path(out) if out else Path(model) / "MODEL_CARD.md"
    atomic_write_text(out, to_markdown(card))
    atomic_write_json(out.with_suffix(".json"), card)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llamaforge card", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  llamaforge card --model runs/demo/ppo/final\n"
                                       "  llamaforge card --model runs/sft/final --eval reports/safety "
                                       "--out MODEL_CARD.md")
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--out", help="where to write the card (default MODEL/MODEL_CARD.md; card.json beside it)")
    p.add_argument("--eval", action="append", default=[], help="an evaluation output directory to include "
                                                                "(repeatable)")
    p.add_argument("--name", help="model name in the title (default: the run directory's name)")
    a = p.parse_args(argv)
    out = write_card(a.model, a.out, a.eval, a.name)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
