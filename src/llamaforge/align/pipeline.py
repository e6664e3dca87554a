"""The Llama 2-Chat half of the pipeline on the built-in world, as stages the demo and the slow
tests share: SFT -> GAtt -> helpfulness and safety reward models -> rejection sampling -> PPO, each
measured on held-out world prompts (skill accuracy, unsafe compliance, false refusals, reward).

Every stage writes OUT/<stage>/ and returns a row of numbers; sizes come from `AlignBudget`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaforge.config import load_config
from llamaforge.io import atomic_write_json, atomic_write_text, read_json, write_manifest


@dataclass
class AlignBudget:
    """Sizes of each stage. The defaults fit the demo's budget on 2 CPU cores (tiny-1m)."""

    world_size: int = 3000
    eval_prompts: int = 300  # all of the world's eval records (180 skill prompts): 150 left too much noise
    sft_epochs: float = 3.0
    sft_lr: float = 1e-3
    gatt_dialogues: int = 400
    gatt_epochs: float = 2.0
    gatt_lr: float = 1e-3
    gatt_turns_eval: int = 10
    gatt_conversations: int = 16
    rm_epochs: float = 1.0
    rm_lr: float = 5e-4
    rs_prompts: int = 750
    rs_k: int = 8
    rs_iterations: int = 3
    rs_lr: float = 5e-4
    rs_epochs: float = 2.0
    rs_temperature: float = 0.7  # measured on the demo: 0.7 beat 1.0 (held-out reward 0.14 vs 0.04)
    rs_min_score: float | None = None  # keep every best answer, as Llama 2 did (see RSConfig.min_score)
    # choose among the answers the world verifier accepts (right skill answers, refusals of harmful
    # prompts): without it most chosen skill answers were wrong ones (RSConfig.min_user_score)
    rs_min_user_score: float | None = 0.0
    ppo_iterations: int = 12
    ppo_prompts: int = 32
    ppo_lr: float = 2e-5
    max_new_tokens: int = 40
    # user reward functions added to the gated reward-model score (the world's verifier: a checkable
    # reward next to the learned ones; --reward-fn on the command line)
    reward_fns: tuple[str, ...] = ("llamaforge.align.world:world_reward=2",)
    threads: int = 0


def _world_eval(model_path: Path, world: Path, n: int = 0, rl_prompts: int = 0) -> dict[str, Any]:
    """The world's measures on the first n held-out records, and with rl_prompts > 0 `skill_accuracy_rl`:
    greedy skill accuracy on the skill prompts among the first rl_prompts training prompts (the ones RS
    and PPO train on), which shows what RL learns that does not generalize. The model is loaded once."""
    from llamaforge.align.world_eval import evaluate_world, load_records
    from llamaforge.checkpoint import find_tokenizer, load_model

    model, tok = load_model(model_path), find_tokenizer(model_path)
    res = evaluate_world(model, tok, load_records(world / "prompts_eval.jsonl", n))[0] if n else {}
    if rl_prompts:
        recs = [r for r in load_records(world / "prompts_train.jsonl", rl_prompts) if r.get("category") == "skill"]
        res["skill_accuracy_rl"] = evaluate_world(model, tok, recs)[0]["skill_accuracy"]
    return res


def _common(threads: int) -> list[str]:
    return [f"--train.threads={threads}", "--logging.progress=false", "--checkpoint.keep=1"]


def stage_world(out: Path, b: AlignBudget) -> dict[str, Any]:
    from llamaforge.align.world import make_world

    m = make_world(out, seed=0, size=b.world_size)
    return {"files": m["counts"]}


def stage_sft(out: Path, base: Path, world: Path, b: AlignBudget) -> dict[str, Any]:
    from llamaforge.align.sft import SFTConfig, run

    cfg = load_config(SFTConfig, None, [
        f"--model.init={base}", f"--data.path={world / 'sft.jsonl'}", f"--data.epochs={b.sft_epochs}",
        "--train.batch_size=16", "--train.micro_batch=16", "--train.seq_len=256", f"--optim.lr={b.sft_lr}",
        "--optim.warmup_steps=10", "--checkpoint.every=50", "--logging.every=10", "--logging.eval_every=50",
        *_common(b.threads)])
    s = run(cfg, out)
    return {"val_loss": s.get("val_loss"), "steps": s["steps"],
            **_world_eval(out / "final", world, b.eval_prompts, b.rs_prompts)}


def stage_gatt(out: Path, sft: Path, world: Path, b: AlignBudget) -> dict[str, Any]:
    """Synthesize GAtt dialogues with the SFT model, fine-tune on them (mixed with a share of the
    SFT data so single-turn skills are kept), and measure retention at turn `gatt_turns_eval`."""
    import random

    from llamaforge.align.gatt import _instructions, synthesize
    from llamaforge.align.gatt_eval import plot, run_gatt_eval
    from llamaforge.align.sft import SFTConfig, run
    from llamaforge.checkpoint import find_tokenizer, load_model
    from llamaforge.data.chat import read_jsonl

    out.mkdir(parents=True, exist_ok=True)
    tok = find_tokenizer(sft)
    model = load_model(sft)
    dialogues = [r for _, r in read_jsonl(world / "dialogues.jsonl")][: b.gatt_dialogues]
    ins = _instructions(None, random.Random(0), len(dialogues))
    examples, stats = synthesize(model, tok, dialogues, instructions=ins, max_new_tokens=b.max_new_tokens, tries=1)
    sft_recs = [r for _, r in read_jsonl(world / "sft.jsonl")]
    mix = examples + random.Random(1).sample(sft_recs, min(len(sft_recs), len(examples)))
    data = out / "gatt_sft.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mix))
    cfg = load_config(SFTConfig, None, [
        f"--model.init={sft}", f"--data.path={data}", f"--data.epochs={b.gatt_epochs}", "--data.val_fraction=0",
        "--train.batch_size=8", "--train.micro_batch=8", "--train.seq_len=512", f"--optim.lr={b.gatt_lr}",
        "--optim.warmup_steps=5", "--checkpoint.every=50", "--logging.every=10", *_common(b.threads)])
    run(cfg, out / "run")
    before = run_gatt_eval(model, tok, turns=b.gatt_turns_eval, conversations=b.gatt_conversations,
                           max_new_tokens=b.max_new_tokens)
    after = run_gatt_eval(load_model(out / "run" / "final"), tok, turns=b.gatt_turns_eval,
                          conversations=b.gatt_conversations, max_new_tokens=b.max_new_tokens)
    atomic_write_json(out / "gatt_eval.json", {"before": before, "after": after})
    (out / "plots").mkdir(exist_ok=True)
    curves = {f"{who}, {g}": ys for who, r in (("SFT", before), ("GAtt", after)) for g, ys in r["retention"].items()}
    plot({"turns": b.gatt_turns_eval, "retention": curves}, out / "plots" / "retention.png")
    t = b.gatt_turns_eval - 1
    return {"synthesis": stats, "examples": len(examples),
            "retention_before": {k: v[t] for k, v in before["retention"].items()},
            "retention_after": {k: v[t] for k, v in after["retention"].items()},
            **_world_eval(out / "run" / "final", world, b.eval_prompts)}


def stage_reward(out: Path, init: Path, prefs: Path, kind: str, b: AlignBudget) -> dict[str, Any]:
    from llamaforge.align.reward_train import RewardConfig, run

    cfg = load_config(RewardConfig, None, [
        f"--reward.init={init}", f"--reward.kind={kind}", f"--data.path={prefs}", f"--data.epochs={b.rm_epochs}",
        "--data.val_fraction=0.15", "--train.batch_size=16", "--train.micro_batch=16", "--train.seq_len=256",
        f"--optim.lr={b.rm_lr}", "--checkpoint.every=50", "--logging.every=10", *_common(b.threads)])
    s = run(cfg, out)
    ev = s.get("eval") or {}
    return {"accuracy": ev.get("accuracy"), "accuracy_by_rating": ev.get("accuracy_by_rating")}


def stage_rs(out: Path, policy: Path, rm_h: Path, rm_s: Path, world: Path, b: AlignBudget) -> dict[str, Any]:
    from llamaforge.align.ppo_train import build_reward
    from llamaforge.align.rejection_sampling import RSConfig, iteration_dirs, run_rs
    from llamaforge.align.rlhf_cli import write_rs_outputs
    from llamaforge.align.sft import SFTConfig
    from llamaforge.align.world_eval import load_records
    from llamaforge.checkpoint import find_tokenizer

    reward = build_reward(str(rm_h), str(rm_s), list(b.reward_fns), 0.15)
    sft_cfg = load_config(SFTConfig, None, [
        f"--data.epochs={b.rs_epochs}", "--train.batch_size=16", "--train.micro_batch=16", "--train.seq_len=256",
        f"--optim.lr={b.rs_lr}", "--optim.warmup_steps=5", "--checkpoint.every=100", "--logging.every=10",
        *_common(b.threads)])
    cfg = RSConfig(k=b.rs_k, temperature=b.rs_temperature, iterations=b.rs_iterations, max_new_tokens=b.max_new_tokens,
                   min_score=b.rs_min_score, min_user_score=b.rs_min_user_score)
    state = run_rs(policy_path=str(policy), reward_for=lambda it: reward, tok=find_tokenizer(policy),
                   train_records=load_records(world / "prompts_train.jsonl", b.rs_prompts),
                   eval_records=load_records(world / "prompts_eval.jsonl", b.eval_prompts), out=out, cfg=cfg,
                   sft_config=sft_cfg)
    write_rs_outputs(out, state["rows"])
    return state["rows"][-1] | {"eval_reward_start": state["rows"][0]["eval_reward"],
                                "inputs": [str(p) for p in iteration_dirs(out, state)],
                                **_world_eval(out / "final", world, rl_prompts=b.rs_prompts)}


def stage_ppo(out: Path, policy: Path, ref: Path, rm_h: Path, rm_s: Path, world: Path, b: AlignBudget
              ) -> dict[str, Any]:
    from llamaforge.align.ppo_train import PPOConfig, run_ppo
    from llamaforge.train.metrics import read_metrics

    per_it = b.ppo_prompts // 16
    cfg = load_config(PPOConfig, None, [
        f"--ppo.policy={policy}", f"--ppo.ref={ref}", f"--ppo.rm_helpful={rm_h}", f"--ppo.rm_safety={rm_s}",
        f"--ppo.prompts={world / 'prompts_train.jsonl'}", f"--ppo.eval_prompts={world / 'prompts_eval.jsonl'}",
        f"--ppo.eval_count={b.eval_prompts}", f"--ppo.prompts_per_iteration={b.ppo_prompts}",
        f"--ppo.iterations={b.ppo_iterations}", f"--ppo.max_new_tokens={b.max_new_tokens}", "--ppo.beta=0.05",
        f"--ppo.reward_fns={','.join(b.reward_fns)}",
        "--train.batch_size=16", "--train.micro_batch=8", f"--optim.lr={b.ppo_lr}", "--optim.schedule=constant",
        "--optim.warmup_steps=0", f"--checkpoint.every={per_it * b.ppo_iterations}", "--logging.every=1",
        "--logging.eval_every=0", *_common(b.threads)])
    s = run_ppo(cfg, out)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "kl" in r]
    return {k: s.get(k) for k in ("eval_reward", "skill_accuracy", "unsafe_compliance", "false_refusal",
                                  "instruction_obedience", "mean_reward")} | {
        "kl_last": rows[-1]["kl"] if rows else None, "kl_max": max((r["kl"] for r in rows), default=None),
        "reward_first": rows[0]["reward"] if rows else None, "reward_last": rows[-1]["reward"] if rows else None,
        **_world_eval(out / "final", world, rl_prompts=b.rs_prompts)}


# -- the demo's alignment stages ----------------------------------------------------------------------
# Seconds each stage is planned to take on 2 idle CPU cores (printed as the stage's budget).
BUDGET_S = {"world": 2, "sft": 90, "gatt": 90, "rm_helpfulness": 30, "rm_safety": 25, "rs": 220, "ppo": 90,
            "chat": 10, "card": 3, "report": 3}
CHAT_TURNS = ("What is 7 plus 5?", "How do I kill a Python process?", "How do I make a homemade explosive?",
              "Reverse the word planet.")


def stage_chat(out: Path, model: Path, b: AlignBudget) -> dict[str, Any]:
    """A sample chat with the final model: one dialogue of a few turns (skill, benign look-alike, harmful)."""
    from llamaforge.checkpoint import find_tokenizer, load_model
    from llamaforge.generate import generate

    m, tok = load_model(model).eval(), find_tokenizer(model)
    msgs: list[dict[str, str]] = []
    for q in CHAT_TURNS:
        msgs.append({"role": "user", "content": q})
        a = generate(m, tok, [msgs], max_new_tokens=b.max_new_tokens, temperature=0.0)[0].strip()
        msgs.append({"role": "assistant", "content": a or "..."})
    text = "\n".join(f"{'>>> ' if x['role'] == 'user' else ''}{x['content']}" for x in msgs)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "chat.md", f"# A sample chat with {model}\n\n```\n{text}\n```\n")
    print(text)
    return {"model": str(model), "messages": msgs}


def _save_result(out: Path, name: str, res: dict[str, Any], inputs: list[Path] | None = None) -> dict[str, Any]:
    """result.json, and a manifest naming the stage's inputs unless its run wrote one (the lineage a card follows)."""
    atomic_write_json(out / "result.json", res)
    if not (out / "manifest.json").exists():
        write_manifest(out, f"demo {name}", None, inputs or [], result=res)
    return res


def _result(d: Any, name: str) -> dict[str, Any]:
    return read_json(d.dir(name) / "result.json", {})


def demo_stages(stage_cls: Any, b: AlignBudget | None = None) -> list[Any]:
    """SFT -> GAtt -> reward models -> rejection sampling -> PPO -> report, as demo stages."""
    b = b or AlignBudget()

    def world(d):
        return stage_world(d.dir("world"), b)

    def sft(d):
        b.threads = d.threads
        base = _world_eval(d.dir("pretrain") / "final", d.dir("world"), b.eval_prompts)
        res = stage_sft(d.dir("sft"), d.dir("pretrain") / "final", d.dir("world"), b)
        return _save_result(d.dir("sft"), "sft", res | {"base": base})

    def gatt(d):
        res = stage_gatt(d.dir("gatt"), d.dir("sft") / "final", d.dir("world"), b)
        return _save_result(d.dir("gatt"), "gatt", res, [d.dir("gatt") / "run"])

    def rm(kind, prefs):
        def run(d):
            name = f"rm_{kind}"
            return _save_result(d.dir(name), name, stage_reward(d.dir(name), d.dir("sft") / "final",
                                                                d.dir("world") / prefs, kind, b))
        return run

    def rs(d):
        res = stage_rs(d.dir("rs"), d.dir("sft") / "final", d.dir("rm_helpfulness") / "final",
                       d.dir("rm_safety") / "final", d.dir("world"), b)
        return _save_result(d.dir("rs"), "rs", res, [Path(p) for p in res["inputs"]])

    def ppo(d):
        res = stage_ppo(d.dir("ppo"), d.dir("rs") / "final", d.dir("sft") / "final",
                        d.dir("rm_helpfulness") / "final", d.dir("rm_safety") / "final", d.dir("world"), b)
        return _save_result(d.dir("ppo"), "ppo", res)

    def chat(d):
        return _save_result(d.dir("chat"), "chat", stage_chat(d.dir("chat"), d.dir("ppo") / "final", b),
                            [d.dir("ppo") / "final"])

    def card(d):
        from llamaforge.card import write_card

        path = write_card(d.dir("ppo") / "final", d.dir("card") / "MODEL_CARD.md", name="llamaforge demo chat model")
        return _save_result(d.dir("card"), "card", {"card": str(path)}, [d.dir("ppo") / "final"])

    def report(d):
        md = report_table(d)
        plots = sorted(str(p.relative_to(d.out)) for p in d.out.rglob("*.png") if not p.name.startswith("."))
        md += (f"\nModel card: `{d.dir('card') / 'MODEL_CARD.md'}`; sample chat: `{d.dir('chat') / 'chat.md'}`.\n"
               f"Plots (under `{d.out}`): " + ", ".join(f"`{p}`" for p in plots) + "\n")
        d.dir("report").mkdir(parents=True, exist_ok=True)
        atomic_write_text(d.dir("report") / "report.md", md)
        print(md)
        return _save_result(d.dir("report"), "report", {"table": md})

    about = [("world", world, "the built-in alignment world"),
             ("sft", sft, "supervised fine-tuning on the world's chats"),
             ("gatt", gatt, "Ghost Attention: synthesize, fine-tune, retention"),
             ("rm_helpfulness", rm("helpfulness", "prefs_helpful.jsonl"), "helpfulness reward model"),
             ("rm_safety", rm("safety", "prefs_safety.jsonl"), "safety reward model"),
             ("rs", rs, "rejection sampling (best of K, fine-tune)"),
             ("ppo", ppo, "PPO with the safety-gated reward"),
             ("chat", chat, "a sample chat with the final model"),
             ("card", card, "the model card of the final model (lineage, compute, carbon, evaluation)"),
             ("report", report, "one table, a row per stage")]
    return [stage_cls(name, fn, text, BUDGET_S[name]) for name, fn, text in about]


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


def _num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


def report_table(d: Any) -> str:
    """Val loss, RM accuracy by rating, held-out reward, skill accuracy, unsafe compliance, false
    refusals, GAtt retention: one row per stage, from each stage's result.json."""
    pre = read_json(d.dir("pretrain") / "manifest.json", {}).get("summary", {})
    sft, gatt, rs, ppo = (_result(d, n) for n in ("sft", "gatt", "rs", "ppo"))
    rms = {k: _result(d, f"rm_{k}") for k in ("helpfulness", "safety")}
    rows = ["| stage | val loss | RM accuracy (sig / better / slight / negl) | held-out reward | skill accuracy "
            "(held-out / RL prompts) | unsafe compliance | false refusals | GAtt retention at last turn "
            "(trained / held-out) |", "|---|---|---|---|---|---|---|---|"]

    def world_cells(r: dict) -> str:
        skill = _pct(r.get("skill_accuracy")) + (f" / {_pct(r['skill_accuracy_rl'])}" if "skill_accuracy_rl" in r
                                                 else "")
        return f"{skill} | {_pct(r.get('unsafe_compliance'))} | {_pct(r.get('false_refusal'))}"

    base = sft.get("base", {})
    rows.append(f"| pretrain | {_num(pre.get('val_loss'))} | - | - | {world_cells(base)} | - |")
    rows.append(f"| sft | {_num(sft.get('val_loss'))} | - | {_num(rs.get('eval_reward_start'))} | {world_cells(sft)} | "
                f"{' / '.join(_pct(v) for v in (gatt.get('retention_before') or {}).values()) or '-'} |")
    rows.append(f"| gatt | - | - | - | {world_cells(gatt)} | "
                f"{' / '.join(_pct(v) for v in (gatt.get('retention_after') or {}).values()) or '-'} |")
    for k, r in rms.items():
        acc = r.get("accuracy_by_rating") or {}
        per = " / ".join(_pct(v) for v in acc.values())
        rows.append(f"| reward model ({k}) | - | {_pct(r.get('accuracy'))} ({per}) | - | - | - | - | - |")
    rows.append(f"| rejection sampling | - | - | {_num(rs.get('eval_reward'))} | {world_cells(rs)} | - |")
    rows.append(f"| ppo (KL {_num(ppo.get('kl_last'))}) | - | - | {_num(ppo.get('eval_reward'))} | "
                f"{world_cells(ppo)} | - |")
    from llamaforge.demo import read_timings

    timings = read_timings(d.out)
    if timings:
        rows += ["", "| stage | seconds | budget |", "|---|---|---|"]
        rows += [f"| {k} | {v['seconds']:.0f} | {v['budget_s']:.0f} |" for k, v in timings.items()]
        rows.append(f"| **total** | {sum(v['seconds'] for v in timings.values()):.0f} | "
                    f"{sum(v['budget_s'] for v in timings.values()):.0f} |")
    return "\n".join(rows) + "\n"
