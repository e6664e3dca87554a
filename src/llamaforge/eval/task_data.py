"""Checks the data files of the shipped lm-eval tasks before lm_eval reads them, so that a missing
file, a bad line or a missing field is reported as file:line: field (datasets' errors name none)."""

from __future__ import annotations

import csv
import glob
import re
from pathlib import Path

from llamaforge.errors import UserError
from llamaforge.eval.safety.common import get_field, read_jsonl

_ARC = ("question.stem", "question.choices", "answerKey")
_HUMANEVAL = ("task_id", "prompt", "test", "entry_point")
REQUIRED: dict[str, tuple[str, ...]] = {
    "arc_easy_local": _ARC, "arc_challenge_local": _ARC,
    "hellaswag_local": ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
    "piqa_local": ("goal", "sol1", "sol2", "label"),
    "boolq_local": ("question", "passage", "answer"),
    "gsm8k_local": ("question", "answer"),
    "humaneval_local": _HUMANEVAL, "humaneval_sampled_local": _HUMANEVAL,
    "mmlu_local": ("question", "A", "B", "C", "D", "answer"),  # CSV columns, no header
}
_DATA_LINE = re.compile(r"^\s*(test|validation|train|dev)\s*:\s*(\S+)\s*$")


def data_files(yaml_path: Path) -> dict[str, str]:
    """split -> path pattern of a task YAML's `dataset_kwargs.data_files` (one per line, as ours are written)."""
    out, inside = {}, False
    for line in yaml_path.read_text().splitlines():
        if line.strip().startswith("data_files:"):
            inside = True
            continue
        m = _DATA_LINE.match(line) if inside else None
        if m:
            out[m.group(1)] = m.group(2)
        elif inside and line.strip() and not line.startswith("    "):
            inside = False
    return out


def _check_mmlu_csv(path: Path) -> None:
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if len(row) != 6:
                raise UserError(f"{path}:{n}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
            if row[5].strip() not in ("A", "B", "C", "D"):
                raise UserError(f"{path}:{n}: column 6 (answer) must be A, B, C or D, got {row[5]!r}")


def check_task_data(task_dir: Path, tasks: list[str]) -> None:
    """Validate the files of each shipped task among `tasks` (others are left to lm_eval)."""
    yamls = {}
    for y in task_dir.glob("*.yaml"):
        m = re.search(r"^task:\s*(\S+)", y.read_text(), re.M)
        if m:
            yamls[m.group(1)] = y
    for task in tasks:
        if task not in REQUIRED or task not in yamls:
            continue
        for split, pattern in data_files(yamls[task]).items():
            files = sorted(glob.glob(pattern))
            if not files:
                raise UserError(f"task {task}: {split} file {pattern} not found (give the benchmark directory "
                                "with --data-dir; see docs for the expected layout)")
            for f in map(Path, files):
                if task == "mmlu_local":
                    _check_mmlu_csv(f)
                    continue
                for n, rec in read_jsonl(f):
                    for field in REQUIRED[task]:
                        get_field(rec, field, f"{f}:{n}", kind=object)
