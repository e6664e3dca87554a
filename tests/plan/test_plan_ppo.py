"""The PPO memory plan (plan_ppo.ppo_memory) against hand computations and against what the code allocates."""

from __future__ import annotations

import pytest
import torch

from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.plan_memory import GIB, HEADROOM
from llamaforge.plan_ppo import ppo_memory


def test_7b_on_8_gpus_by_hand():
    args = ModelArgs.from_name("llama2-7b")
    n = args.num_params()
    r = ppo_memory(args, dp_shard=8, tp=1, gpu_memory_gib=80)
    by = {m["model"]: m for m in r["models"]}
    assert by["policy"]["resident_gib"] == pytest.approx(12 * n / 8 / GIB)  # fp32 params + two AdamW moments
    assert by["value"]["grads_gib"] == pytest.approx(4 * n / 8 / GIB)  # fp32 gradient shard
    for name in ("reference", "reward (helpfulness)", "reward (safety)"):
        assert by[name]["resident_gib"] == pytest.approx(2 * n / 8 / GIB)  # bf16 shard
    gen = r["phases"]["generation"]
    assert gen["resident"] == pytest.approx((2 * 12 + 3 * 2) * n / 8 / GIB)
    assert gen["gathered_policy"] == pytest.approx(2 * n / GIB)  # the whole policy once, in bf16
    # KV cache of one 4096-token sequence: 2 (k, v) x 32 layers x 32 kv heads x 128 x 2 bytes x 4096 = 2 GiB
    assert r["generation"]["kv_cache_per_sequence_gib"] == pytest.approx(2.0)
    assert gen["kv_cache"] == pytest.approx(2.0 * r["generation"]["gen_batch"])
    assert gen["total"] == pytest.approx(gen["resident"] + gen["gathered_policy"] + gen["kv_cache"])
    assert r["peak_gib"] <= HEADROOM * 80 and r["fits"]


def test_replicated_frozen_models_cost_seven_eighths_more():
    args = ModelArgs.from_name("llama2-7b")
    n = args.num_params()
    sharded = ppo_memory(args, dp_shard=8, gen_batch=4)
    rep = ppo_memory(args, dp_shard=8, gen_batch=4, frozen="replicated")
    extra = 3 * 2 * n * (1 - 1 / 8) / GIB
    for phase in ("generation", "scoring", "training"):
        assert rep["phases"][phase]["resident"] - sharded["phases"][phase]["resident"] == pytest.approx(extra)
    assert rep["config"]["frozen"] == "replicated"
    with pytest.raises(UserError, match="frozen must be"):
        ppo_memory(args, dp_shard=8, frozen="offloaded")


def test_70b_needs_tensor_parallel_for_the_gathered_replica():
    args = ModelArgs.from_name("llama2-70b")
    n = args.num_params()
    dp_only = ppo_memory(args, dp_shard=64, tp=1, gpu_memory_gib=80)
    assert dp_only["phases"]["generation"]["gathered_policy"] == pytest.approx(2 * n / GIB)  # ~128 GiB
    assert dp_only["generation"]["gen_batch"] == 0 and not dp_only["fits"]
    node_tp = ppo_memory(args, dp_shard=8, tp=8, gpu_memory_gib=80)
    assert node_tp["phases"]["generation"]["gathered_policy"] == pytest.approx(2 * n / 8 / GIB)
    assert node_tp["generation"]["gen_batch"] > 0 and node_tp["fits"]


def test_plan_counts_what_the_code_allocates():
    """The gathered replica (ppo_dist.gathered_replica, bf16) and the generator's KV cache, built for real."""
    from llamaforge.model.cache import KVCache
    from llamaforge.model.llama import Transformer

    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=256, multiple_of=16, max_seq_len=128)
    model = Transformer(args).to(torch.bfloat16)
    r = ppo_memory(args, dp_shard=2, gen_batch=3, seq_len=128, prompts_per_iteration=8)
    replica_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert r["phases"]["generation"]["gathered_policy"] * GIB == pytest.approx(replica_bytes)
    cache = KVCache.for_model(model, 3, 128)
    assert r["phases"]["generation"]["kv_cache"] * GIB == pytest.approx(cache.k.nbytes + cache.v.nbytes)
    assert r["generation"]["prompts_per_rank"] == 4 and r["generation"]["rounds"] == 2
