"""`llamaforge plan`: the LLaMA-65B check, JSON, PPO memory, the worked-plans document."""

import json
from pathlib import Path

import pytest

from llamaforge import cli, plan
from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.plan_compute import GPUS, compute_plan, get_gpu
from llamaforge.plan_doc import worked_plans
from llamaforge.plan_memory import GIB, HEADROOM
from llamaforge.plan_ppo import ppo_memory

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = ["--preset", "llama1-65b", "--gpu", "a100", "--gpus", "2048", "--tokens", "1.4e12",
           "--tokens-per-gpu-s", "380"]


def test_llama1_65b_days_and_mfu():
    p = compute_plan(ModelArgs.from_name("llama1-65b"), get_gpu("a100"), 2048, 1.4e12, None, 380)
    assert p["seq_len"] == 2048
    assert 20.3 < p["days"] < 21.3  # "about 21 days" (LLaMA 2.4)
    assert 0.47 < p["mfu_6n"] < 0.485  # "about 48%" with 6N
    assert 0.49 < p["mfu_attn"] < 0.505  # "about 50%" with attention
    assert p["gpu_hours"] == pytest.approx(1_022_362, rel=0.002)  # LLaMA Table 15
    assert p["train_flops_attn"] > p["train_flops_6n"]


def test_mfu_round_trip():
    args = ModelArgs.from_name("llama2-7b")
    p = compute_plan(args, get_gpu("h100"), 8, 1e12, None, None, 0.4, "attn")
    assert p["mfu_attn"] == pytest.approx(0.4)
    q = compute_plan(args, get_gpu("h100"), 8, 1e12, None, None, 0.4, "6n")
    assert q["mfu_6n"] == pytest.approx(0.4) and q["days"] < p["days"]
    assert GPUS["a100"].peak_bf16 == 312e12 and GPUS["h100"].peak_bf16 == 989e12
    assert GPUS["v100"].peak_bf16 == 125e12 and GPUS["h200"].memory_gib > 130


def test_cli_prints_the_example(capsys):
    assert cli.main(["plan", *EXAMPLE]) == 0
    out = capsys.readouterr().out
    for s in ("20.8 days", "47.5% counting 6N", "49.5% counting 6N + attention", "1,023,392 GPU-hours",
              "memory per rank", "selective-attn", "Korthikanti"):
        assert s in out, s


def test_cli_json(capsys):
    assert plan.main([*EXAMPLE, "--json", "--checkpointing", "full", "--budget", "1e22"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["compute"]["mfu_6n"] == pytest.approx(0.475, abs=0.003)
    assert len(d["memory"]) == 1 and d["memory"][0]["config"]["checkpointing"] == "full"
    assert d["scaling"]["budget_flops"] == 1e22


def test_ppo_memory_plan():
    args = ModelArgs.from_name("llama2-7b")
    r = ppo_memory(args, dp_shard=8, tp=1, gpu_memory_gib=80)
    assert [m["model"] for m in r["models"]] == ["policy", "value", "reference", "reward (helpfulness)",
                                                  "reward (safety)"]
    assert r["peak_gib"] == max(ph["total"] for ph in r["phases"].values())
    n = args.num_params()
    assert r["models"][2]["resident_gib"] == pytest.approx(2 * n / 8 / GIB)  # frozen, bf16
    assert r["models"][0]["resident_gib"] == pytest.approx(12 * n / 8 / GIB)  # fp32 params + AdamW
    gen = r["generation"]
    assert gen["prompts_per_rank"] == 64 and 0 < gen["gen_batch"] <= 64
    # the chosen generation batch is the largest that fits
    room = HEADROOM * 80 - r["phases"]["generation"]["resident"] - r["phases"]["generation"]["gathered_policy"]
    assert gen["gen_batch"] * gen["kv_cache_per_sequence_gib"] <= room < (gen["gen_batch"] + 1) * \
        gen["kv_cache_per_sequence_gib"]
    assert r["fits"]
    shared = ppo_memory(args, dp_shard=8, value="shared", reward_models=1)
    assert [m["model"] for m in shared["models"]] == ["policy", "reference", "reward (1)"]
    big = ppo_memory(ModelArgs.from_name("llama2-70b"), dp_shard=8, tp=1, gpu_memory_gib=80)
    assert not big["fits"]


def test_cli_ppo_and_errors(capsys):
    assert plan.main(["--preset", "llama2-70b", "--gpu", "h100", "--gpus", "64", "--tp", "8", "--ppo"]) == 0
    out = capsys.readouterr().out
    assert "PPO memory per rank" in out and "reward (safety)" in out and "generation" in out
    with pytest.raises(UserError, match="must equal"):
        plan.main(["--preset", "llama2-7b", "--gpus", "8", "--dp-shard", "3"])
    with pytest.raises(UserError, match="n_kv_heads"):
        plan.main(["--preset", "llama2-70b", "--gpus", "48", "--tp", "3"])
    with pytest.raises(UserError, match="--preset"):
        plan.main(["--ppo"])


def test_doc_is_generated_and_in_sync(tmp_path, capsys):
    out = tmp_path / "PLANS.md"
    assert plan.main(["--doc", str(out)]) == 0
    text = out.read_text()
    assert text == worked_plans()  # deterministic
    for s in ("llama2-7b", "llama2-70b", "PPO memory per rank", "llamaforge plan --doc docs/PLANS.md"):
        assert s in text
    committed = REPO / "docs" / "PLANS.md"
    assert committed.read_text() == text, "docs/PLANS.md is stale: run `llamaforge plan --doc docs/PLANS.md`"
