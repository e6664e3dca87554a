"""Speed and memory of the alignment recipes on CPU: SFT tokens/s by packing, reward-model pairs/s,
and where a PPO iteration spends its time (rollout vs update).

    .venv/bin/python benchmarks/align_speed.py [--preset tiny-15m] [--threads 2]

Models have random weights (speed does not depend on them); data is the built-in world.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil
import torch


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def mean_step_time(loss_fn, opt, steps: int) -> float:
    """Mean seconds of an optimizer step (forward, backward, update) over `steps`, after one warm-up step."""
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss_fn(i).backward()
        opt.step()
        opt.zero_grad()
        if i:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny-15m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from llamaforge.align.ppo import PPOModel, RolloutConfig, Rollouts, ppo_loss_fn
    from llamaforge.align.reward import reward_model_from_lm
    from llamaforge.align.reward_train import collate_pairs, encode_pairs, pair_loss
    from llamaforge.align.rewards import CombinedReward
    from llamaforge.align.world import make_world, world_reward
    from llamaforge.align.world_eval import load_records, record_dialogue
    from llamaforge.data.chat import EncodeStats, collate, encode_sft_file, load_pref_pairs, pack, packing_efficiency
    from llamaforge.model.args import ModelArgs
    from llamaforge.model.llama import Transformer, causal_block_mask
    from llamaforge.tokenizer import Tokenizer, train_tokenizer

    tmp = Path(tempfile.mkdtemp())
    make_world(tmp / "w", size=1000)
    lines = [x for x in (tmp / "w" / "sft.jsonl").read_text().splitlines()]
    tok = Tokenizer(train_tokenizer(lines * 3, 2048, tmp / "tok"))
    torch.manual_seed(0)
    lm = Transformer(ModelArgs.from_name(a.preset, vocab_size=tok.n_words))
    lm.init_weights()
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    print(f"model {a.preset}: {lm.num_params() / 1e6:.1f}M parameters, {a.threads} threads")
    print("| stage | setting | throughput | step time | peak RSS |\n|---|---|---|---|---|")
    samples = encode_sft_file(tmp / "w" / "sft.jsonl", tok, 512, "truncate", EncodeStats())
    for mode in ("isolated", "concat", "none"):
        rows = pack(samples, 512, mode)
        b = collate(rows[:8])

        def sft_loss(i, b=b, mode=mode):
            if mode == "isolated":
                logits = lm(b["tokens"], input_pos=b["positions"], mask=causal_block_mask(b["docs"]))
            else:
                logits = lm(b["tokens"])
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100)

        dt = mean_step_time(sft_loss, opt, a.steps)
        eff = packing_efficiency(rows)
        print(f"| SFT | packing {mode} (efficiency {eff:.0%}), 8 x 512 | {8 * 512 * eff / dt:,.0f} answer+prompt "
              f"tokens/s | {dt:.2f} s | {rss_mb():,.0f} MB |")
    rm = reward_model_from_lm(lm)
    items = encode_pairs(load_pref_pairs(tmp / "w" / "prefs_helpful.jsonl")[: 16 * (a.steps + 1)], tok, 256, "small")
    opt = torch.optim.AdamW(rm.parameters(), lr=1e-4)
    dt = mean_step_time(lambda i: pair_loss(rm, collate_pairs(items[i * 16:(i + 1) * 16]))[0], opt, a.steps)
    print(f"| reward model | 16 pairs (chosen + rejected in one forward) | {16 / dt:,.1f} pairs/s | {dt:.2f} s | "
          f"{rss_mb():,.0f} MB |")
    torch.manual_seed(0)
    policy = Transformer(lm.args)
    policy.init_weights()
    ref = Transformer(lm.args)
    ref.load_state_dict(policy.state_dict())
    value = reward_model_from_lm(Transformer(lm.args))
    model = PPOModel(policy, value)
    recs = load_records(tmp / "w" / "prompts_train.jsonl", 64)
    ro = Rollouts(model, ref, CombinedReward(fns=[(world_reward, 1.0)]), tok, recs, [record_dialogue(r) for r in recs],
                  RolloutConfig(prompts_per_iteration=32, micro=8, max_new_tokens=32, iterations=1))
    t0 = time.perf_counter()
    ro.make_rollouts()
    t_roll = time.perf_counter() - t0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    loss_fn = ppo_loss_fn()
    t0 = time.perf_counter()
    n = 0
    while ro.order:
        batch = next(ro)
        loss, _ = loss_fn(model, batch)
        loss.backward()
        n += 1
        if n % 2 == 0:
            opt.step()
            opt.zero_grad()
    t_upd = time.perf_counter() - t0
    print(f"| PPO iteration | 32 prompts, 32 new tokens, minibatch 16 | rollout {t_roll:.1f} s + update "
          f"{t_upd:.1f} s | {t_roll + t_upd:.1f} s | {rss_mb():,.0f} MB |")


if __name__ == "__main__":
    main()
