"""Rejection sampling and PPO run end to end on tiny models; PPO resumes exactly after SIGKILL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamaforge.checkpoint import load_model
from llamaforge.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_checkpoint):
    from llamaforge.align.reward_train import save_untrained

    return save_untrained(str(tiny_checkpoint), tmp_path_factory.mktemp("rm") / "rm")


def test_rejection_sampling_iterations(tmp_path, tiny_checkpoint, rm_dir, world_dir):
    out = tmp_path / "rs"
    argv = ["rlhf", "rs", "--policy", str(tiny_checkpoint), "--rm-helpful", str(rm_dir), "--rm-safety", str(rm_dir),
            "--reward-fn", "llamaforge.align.world:world_reward=0.5",
            "--prompts", str(world_dir / "prompts_train.jsonl"),
            "--eval-prompts", str(world_dir / "prompts_eval.jsonl"), "--eval-count", "6", "--limit", "8",
            "--out", str(out), "--k", "3", "--iterations", "2", "--max-new-tokens", "8",
            "--sweep-temperatures", "0.7,1.3", "--sft.train.batch_size=2", "--sft.train.micro_batch=2",
            "--sft.train.seq_len=128", "--sft.data.epochs=1", "--sft.logging.progress=false", "--sft.optim.lr=1e-3"]
    assert main(argv) == 0
    rows = json.loads((out / "rs.json").read_text())
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        curve = r["best_of_k_curve"]
        assert len(curve) == 3 and curve == sorted(curve)  # best of more samples is never worse
        assert set(r["temperature_sweep"]) == {"0.7", "1.3"}
    assert (out / "iter_2" / "samples" / "chosen.jsonl").is_file()
    chosen = [json.loads(x) for x in (out / "iter_1" / "samples" / "chosen.jsonl").read_text().splitlines()]
    samples = [json.loads(x) for x in (out / "iter_1" / "samples" / "samples.jsonl").read_text().splitlines()]
    best = {json.dumps(s["prompt"]): s["answers"][s["best"]] for s in samples if s["answers"][s["best"]]}
    assert len(chosen) == len(best)  # empty best answers are not trained on
    for c in chosen:  # the kept answer is the best-scoring sample of its prompt
        assert c["messages"][-1]["content"] == best[json.dumps(c["messages"][-2]["content"])]
    assert all(s["scores"][s["best"]] == max(s["scores"]) for s in samples)
    load_model(out / "final")
    assert "| iteration |" in (out / "report.md").read_text()
    assert (out / "plots" / "rs.png").stat().st_size > 1000
    # Re-running continues after the last finished iteration: nothing to do.
    assert main(argv) == 0
    assert len(json.loads((out / "rs.json").read_text())) == 3


def _ppo_cmd(policy, rm, prompts, out):
    return [sys.executable, "-m", "llamaforge", "rlhf", "ppo", "--config", "configs/rlhf/tiny.toml",
            "--policy", str(policy), "--rm-helpful", str(rm), "--rm-safety", str(rm), "--prompts", str(prompts),
            "--out", str(out), "--ppo.prompts_per_iteration=8", "--ppo.iterations=3", "--ppo.max_new_tokens=8",
            "--ppo.eval_count=4", "--train.batch_size=4", "--train.micro_batch=2", "--checkpoint.every=2",
            "--logging.every=1", "--logging.eval_every=2", "--logging.progress=false", "--train.threads=1",
            "--optim.lr=1e-4", "--reward-fn", "llamaforge.align.world:world_reward"]


def _rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_ppo_runs_and_resumes_exactly(tmp_path, tiny_checkpoint, rm_dir, world_dir):
    prompts = world_dir / "prompts_train.jsonl"
    a = tmp_path / "a"
    r = subprocess.run(_ppo_cmd(tiny_checkpoint, rm_dir, prompts, a), capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(a)
    train = {x["step"]: x for x in rows if "loss" in x}
    assert sorted(train) == [1, 2, 3, 4, 5, 6]
    for key in ("reward", "kl", "entropy", "clipfrac", "value_loss", "response_length"):
        assert all(key in x for x in train.values()), key
    assert train[1]["kl"] == 0.0  # the policy starts equal to the reference
    assert any("eval_reward" in x for x in rows)
    load_model(a / "final")
    b = tmp_path / "b"
    cmd = _ppo_cmd(tiny_checkpoint, rm_dir, prompts, b)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "LLAMAFORGE_FAULT": "kill_in_save:4"})
    assert r.returncode == -9
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    again = {x["step"]: x["loss"] for x in _rows(b) if "loss" in x}
    assert again == {s: x["loss"] for s, x in train.items()}


def test_ppo_config_errors(tmp_path, tiny_checkpoint, rm_dir, world_dir, capsys):
    argv = ["rlhf", "ppo", "--config", str(ROOT / "configs/rlhf/tiny.toml"), "--policy", str(tiny_checkpoint),
            "--rm-helpful", str(rm_dir), "--prompts", str(world_dir / "prompts_train.jsonl"), "--out",
            str(tmp_path / "x"), "--ppo.prompts_per_iteration=10", "--train.batch_size=4",
            "--train.micro_batch=2"]
    assert main(argv) == 2
    assert "multiple of train.batch_size" in capsys.readouterr().err


def test_rejection_sampling_min_score(tmp_path, tiny_checkpoint, world_dir, capsys):
    """--min-score keeps only best answers that score at least the threshold; none at all is a clear error."""
    def argv(out, min_score):
        return ["rlhf", "rs", "--policy", str(tiny_checkpoint), "--reward-fn", "llamaforge.align.world:world_reward",
                "--prompts", str(world_dir / "prompts_train.jsonl"), "--eval-prompts",
                str(world_dir / "prompts_eval.jsonl"), "--eval-count", "4", "--limit", "8", "--out", str(out),
                "--k", "2", "--iterations", "1", "--max-new-tokens", "6", "--min-score", str(min_score),
                "--sft.train.batch_size=1", "--sft.train.micro_batch=1", "--sft.train.seq_len=128",
                "--sft.data.epochs=1", "--sft.logging.progress=false"]

    assert main(argv(tmp_path / "rs", -0.5)) == 0
    row = json.loads((tmp_path / "rs" / "rs.json").read_text())[1]
    lines = (tmp_path / "rs" / "iter_1" / "samples" / "samples.jsonl").read_text().splitlines()
    samples = [json.loads(x) for x in lines]
    kept = [s for s in samples if s["scores"][s["best"]] >= -0.5]
    assert 0 < len(kept) < len(samples)  # world_reward: wrong skill answers and complied harm score -1
    assert row["below_min_score"] == len(samples) - len(kept) and row["chosen"] == len(kept)
    assert main(argv(tmp_path / "none", 2.0)) == 2  # world_reward is at most 1
    assert "lower --min-score" in capsys.readouterr().err


def test_rejection_sampling_min_user_score_chooses_the_best_verified_answer(tmp_path, tiny_checkpoint, world_dir):
    """With a verifier gate the chosen answer is the best-scoring one the verifier accepts, even when a
    rejected answer scores higher overall; prompts with no accepted answer are left out."""
    import torch

    from llamaforge.align.rejection_sampling import RSConfig, run_rs
    from llamaforge.align.sft import SFTConfig
    from llamaforge.align.world_eval import load_records
    from llamaforge.checkpoint import find_tokenizer
    from llamaforge.config import load_config

    class Stub:  # the verifier accepts answers of odd length; the "reward model" prefers rejected ones
        def score(self, records, prompts, answers):
            user = torch.tensor([1.0 if len(a) % 2 else -1.0 for a in answers])
            return {"user": user, "score": -10 * user + torch.tensor([len(a) / 100 for a in answers])}

    sft = load_config(SFTConfig, None, ["--train.batch_size=1", "--train.micro_batch=1", "--train.seq_len=128",
                                        "--data.epochs=1", "--logging.progress=false"])
    recs = load_records(world_dir / "prompts_train.jsonl", 8)
    st = run_rs(policy_path=str(tiny_checkpoint), reward_for=lambda it: Stub(), tok=find_tokenizer(tiny_checkpoint),
                train_records=recs, eval_records=recs[:2], out=tmp_path / "rs", sft_config=sft, log=lambda *a: None,
                cfg=RSConfig(k=3, iterations=1, max_new_tokens=6, temperature=1.0, min_user_score=0.0))
    samples = [json.loads(x) for x in (tmp_path / "rs/iter_1/samples/samples.jsonl").read_text().splitlines()]
    chosen = [json.loads(x)["messages"][-1]["content"]
              for x in (tmp_path / "rs/iter_1/samples/chosen.jsonl").read_text().splitlines()]
    want = []
    for s in samples:
        ok = [a for a in s["answers"] if len(a) % 2 and a]
        if ok:
            want.append(max(ok, key=len))  # the highest score among the accepted ones
    assert chosen == want and want
    # the gate mattered: some prompt had a rejected answer that the plain argmax would have chosen
    assert any(any(len(a) % 2 == 0 for a in s["answers"]) and any(len(a) % 2 for a in s["answers"])
               for s in samples)
    assert st["rows"][1]["no_verified_answer"] == sum(not any(len(a) % 2 for a in s["answers"]) for s in samples)
