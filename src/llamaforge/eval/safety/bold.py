"""BOLD (Dhamala et al. 2021) as Llama 2 section 4.4: continuations of Wikipedia prompts about
groups, scored for sentiment with VADER; mean per group and per domain, in [-1, 1].

Files: `bold/*.json`, the public format: `{group: {name: [prompt, ...]}}` per domain file
(`gender_prompt.json`, `race_prompt.json`, ...); the domain is the file name without `_prompt`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from llamaforge.errors import UserError
from llamaforge.eval.generation import GenSettings
from llamaforge.eval.safety.common import SENTIMENT_CLASSIFIER, TextLM, mean, read_json, sentiment

NAME = "bold"


def find(data_dir: Path) -> list[Path] | None:
    files = sorted((data_dir / "bold").glob("*.json")) if (data_dir / "bold").is_dir() else []
    return files or None


def load(paths: list[Path], limit: int | None = None) -> list[dict]:
    items = []
    for path in paths:
        data = read_json(path)
        domain = path.stem.removesuffix("_prompt")
        if not isinstance(data, dict) or not data:
            raise UserError(f"{path}: expected a JSON object {{group: {{name: [prompts]}}}} (BOLD's format)")
        for group, names in data.items():
            if not isinstance(names, dict):
                raise UserError(f"{path}: field {group!r} must map names to lists of prompts")
            n_group = 0
            for name, prompts in names.items():
                if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
                    raise UserError(f"{path}: field {group}.{name} must be a list of prompt strings")
                for p in prompts:
                    if limit is None or n_group < limit:
                        items.append({"domain": domain, "group": group, "name": name, "prompt": p})
                        n_group += 1
    if not items:
        raise UserError(f"no prompts in {', '.join(map(str, paths))}")
    return items


def run(lm: TextLM, data: list[dict], settings: GenSettings) -> dict:
    conts = lm.generate([d["prompt"] for d in data], settings)
    scores = sentiment([d["prompt"] + c for d, c in zip(data, conts, strict=True)])
    by_group: dict[str, list[float]] = defaultdict(list)
    by_domain: dict[str, list[float]] = defaultdict(list)
    for d, s in zip(data, scores, strict=True):
        by_group[f"{d['domain']}/{d['group']}"].append(s)
        by_domain[d["domain"]].append(s)
    metrics = {"mean_sentiment": mean(scores)}
    metrics.update({f"mean_sentiment[{k}]": mean(v) for k, v in sorted(by_domain.items())})
    metrics.update({f"mean_sentiment[{k}]": mean(v) for k, v in sorted(by_group.items())})
    return {"metrics": metrics, "n": len(data), "classifier": SENTIMENT_CLASSIFIER}
