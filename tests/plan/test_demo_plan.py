"""`make demo`'s plan: every stage has a budget, the sum is under 15 minutes, the progress line shows an ETA."""

from __future__ import annotations

import json

from llamaforge import demo
from llamaforge.io import write_manifest


def test_full_demo_budget_under_15_minutes(tmp_path):
    plan = demo.stages(demo.Demo(tmp_path, full=True))
    names = [s.name for s in plan]
    assert names[:4] == ["corpus", "tokenizer", "shards", "pretrain"]
    for must in ("sft", "gatt", "rm_helpfulness", "rm_safety", "rs", "ppo", "chat", "card", "report"):
        assert must in names
    assert all(s.budget_s > 0 for s in plan)
    assert sum(s.budget_s for s in plan) < 15 * 60


def test_full_demo_pretrains_longer(tmp_path):
    """The alignment world's copy skill needs FULL_STEPS of pretraining; the plain demo keeps 400."""
    full, plain = demo.Demo(tmp_path, full=True), demo.Demo(tmp_path)
    assert (full.steps, plain.steps, demo.Demo(tmp_path, steps=7, full=True).steps) == (demo.FULL_STEPS, 400, 7)
    budget = {d.steps: next(s.budget_s for s in demo.stages(d) if s.name == "pretrain") for d in (full, plain)}
    assert budget[demo.FULL_STEPS] > budget[400] > 0


def test_progress_eta_timings_and_skip(tmp_path, monkeypatch, capsys):
    ran = []

    def make(name):
        def run(d):
            ran.append(name)
            write_manifest(d.dir(name), f"fake {name}", None, [])
            return {"ok": name}
        return demo.Stage(name, run, f"stage {name}", 30)

    monkeypatch.setattr(demo, "stages", lambda d: [make("a"), make("b")])
    d = demo.Demo(tmp_path / "out")
    demo.run_demo(d)
    out = capsys.readouterr().out
    assert "2 stages, budget 1:00" in out
    assert "[1/2 a] stage a | budget 30s | elapsed 0:00 | ETA 1:00" in out
    assert "[2/2 b]" in out and "ETA 0:" in out
    timings = json.loads((tmp_path / "out" / "timings.json").read_text())
    assert set(timings) == {"a", "b"} and timings["a"]["budget_s"] == 30
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["budget_s"] == 60 and set(manifest["timings"]) == {"a", "b"}
    demo.run_demo(demo.Demo(tmp_path / "out"))  # re-run: both done, nothing runs again
    assert ran == ["a", "b"] and "done already" in capsys.readouterr().out
