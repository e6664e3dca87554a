"""The demo's report table: one row per stage from each stage's result.json."""

import json
from pathlib import Path

from llamaforge.align.pipeline import report_table


class _Demo:
    def __init__(self, out: Path):
        self.out = out

    def dir(self, name: str) -> Path:
        return self.out / name


def _write(d: _Demo, name: str, res: dict) -> None:
    d.dir(name).mkdir(parents=True, exist_ok=True)
    (d.dir(name) / "result.json").write_text(json.dumps(res))


def test_report_rows_show_held_out_and_rl_prompt_skill(tmp_path):
    d = _Demo(tmp_path)
    world = {"unsafe_compliance": 0.05, "false_refusal": 0.5}
    _write(d, "sft", {"val_loss": 0.8, "skill_accuracy": 0.1, "skill_accuracy_rl": 0.084, **world,
                      "base": {"skill_accuracy": 0.03, "unsafe_compliance": 1.0, "false_refusal": 0.0}})
    _write(d, "rs", {"eval_reward": 0.6, "eval_reward_start": 0.33, "skill_accuracy": 0.106,
                     "skill_accuracy_rl": 0.122, **world})
    _write(d, "ppo", {"eval_reward": 0.5, "kl_last": 2.3, "skill_accuracy": 0.089, "skill_accuracy_rl": 0.116,
                      **world})
    _write(d, "gatt", {"skill_accuracy": 0.1, **world, "retention_before": {"trained": 0.0},
                       "retention_after": {"trained": 0.25}})
    md = report_table(d)
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in md.splitlines()
            if r.startswith("| ") and not r.startswith("| stage")}
    assert "skill accuracy (held-out / RL prompts)" in md
    assert rows["sft"][3] == "10.0% / 8.4%" and rows["sft"][2] == "0.330"
    assert rows["rejection sampling"][2:4] == ["0.600", "10.6% / 12.2%"]
    assert rows["ppo (KL 2.300)"][2:4] == ["0.500", "8.9% / 11.6%"]
    assert rows["gatt"][3] == "10.0%"  # no RL-prompt number for GAtt: only the held-out one
