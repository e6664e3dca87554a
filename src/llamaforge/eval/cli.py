"""`llamaforge eval ppl|harness|safety|compare|redteam`: argument parsing and output writing only."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llamaforge.errors import UserError
from llamaforge.eval.generation import GenSettings
from llamaforge.io import atomic_dir, atomic_file, atomic_write_json, write_manifest


def _parser(prog: str, description: str, example: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"llamaforge eval {prog}", description=description,
                                   epilog=f"example:\n  {example}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default 16)")


def _gen_args(p: argparse.ArgumentParser, temperature: float = 0.1, top_p: float = 0.9) -> None:
    g = p.add_argument_group("generation (defaults: Llama 2 A.4.7)")
    g.add_argument("--temperature", type=float, default=temperature)
    g.add_argument("--top-p", type=float, default=top_p)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--seed", type=int, default=0)


def _settings(a: argparse.Namespace) -> GenSettings:
    return GenSettings(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p, seed=a.seed,
                       batch_size=a.batch_size)


def _load(path: str, a: argparse.Namespace):
    from llamaforge.checkpoint import find_tokenizer, load_model

    model = load_model(path, device=a.device, dtype=a.dtype)
    tok = find_tokenizer(path)
    if tok is None:
        raise UserError(f"--model {path}: no tokenizer.model beside the checkpoint")
    return model, tok


def _names(paths: list[str]) -> list[str]:
    short = [Path(p).name or p for p in paths]
    return short if len(set(short)) == len(short) else list(paths)


# -- ppl ----------------------------------------------------------------------------------------
def ppl_main(argv: list[str]) -> int:
    p = _parser("ppl", "Perplexity and bits per byte of text files, with a sliding window.",
                "llamaforge eval ppl --model runs/tiny/final --data.path val.jsonl --stride 256")
    p.add_argument("--model", required=True, help="checkpoint directory (native, Meta or HF)")
    p.add_argument("--data.path", dest="data_path", action="append", required=True,
                   help="text file (.txt whole file = one document, .jsonl, .jsonl.gz/.zst, .parquet); repeatable")
    p.add_argument("--data.text_field", dest="text_field", default="text", help="JSONL/parquet text field")
    p.add_argument("--stride", type=int, default=None, help="new tokens per window (default: max length, disjoint)")
    p.add_argument("--max-length", type=int, default=None, help="window length (default: the model's context)")
    p.add_argument("--max-docs", type=int, default=None, help="read at most this many documents")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    _model_args(p)
    a = p.parse_args(argv)
    from llamaforge.eval.likelihood import LikelihoodScorer
    from llamaforge.eval.perplexity import perplexity, read_texts

    t0 = time.time()
    texts = read_texts(a.data_path, a.text_field, a.max_docs)
    model, tok = _load(a.model, a)
    res = perplexity(LikelihoodScorer(model, tok, a.batch_size, a.max_length), texts, a.stride).to_dict()
    res.update({"model": a.model, "data": a.data_path, "stride": a.stride, "max_length": a.max_length,
                "seconds": round(time.time() - t0, 3)})
    print(f"{a.model}: perplexity {res['perplexity']:.4f}, bits/byte {res['bits_per_byte']:.4f} "
          f"({res['documents']} documents, {res['tokens']} tokens, {res['bytes']} bytes)")
    if a.out:
        atomic_write_json(a.out, res)
    return 0


# -- harness ------------------------------------------------------------------------------------
def harness_main(argv: list[str]) -> int:
    p = _parser("harness", "Run lm-evaluation-harness tasks offline on local task YAMLs and data files.",
                "llamaforge eval harness --model runs/tiny/final --tasks arc_easy_local,hellaswag_local "
                "--data-dir ~/data/benchmarks --out results.json")
    p.add_argument("--model", required=True)
    p.add_argument("--tasks", required=True, help="comma-separated task names")
    p.add_argument("--include-path", default=None, help="directory of task YAMLs (default configs/eval/tasks)")
    p.add_argument("--data-dir", default=None, help="where relative data_files in the YAMLs are found "
                   "(default: the YAML directory)")
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="first N documents per task")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--chat", action="store_true", help="apply the Llama 2 chat template to every prompt")
    p.add_argument("--allow-code-execution", action="store_true",
                   help="needed for HumanEval: runs generated code in the sandbox (eval/humaneval.py)")
    p.add_argument("--log-samples", action="store_true", help="keep per-document outputs in --out")
    p.add_argument("--bootstrap-iters", type=int, default=1000, help="for the stderr of non-mean metrics")
    p.add_argument("--out", default=None, help="write lm_eval's results as JSON here")
    _model_args(p)
    a = p.parse_args(argv)
    from llamaforge.eval.harness import LlamaforgeLM, run_harness

    lm = LlamaforgeLM(path=a.model, batch_size=a.batch_size, device=a.device, dtype=a.dtype,
                      max_length=a.max_length, chat=a.chat)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    res = run_harness(lm, tasks, a.include_path, a.data_dir, a.num_fewshot, a.limit, a.chat, a.log_samples,
                      a.allow_code_execution, a.bootstrap_iters)
    from lm_eval.utils import make_table

    print(make_table(res))
    if a.out:
        keep = {k: res[k] for k in ("results", "configs", "versions", "n-shot", "samples") if k in res}
        with atomic_file(a.out) as f:
            json.dump(keep, f, indent=2, default=str)
    return 0


# -- safety -------------------------------------------------------------------------------------
def safety_main(argv: list[str]) -> int:
    from llamaforge.eval.safety import BENCHMARKS, FILES

    p = _parser("safety", "The safety and bias benchmarks of LLaMA and Llama 2 on local files. Runs whichever "
                "files --data holds: " + "; ".join(f"{k}: {v}" for k, v in FILES.items()),
                "llamaforge eval safety --model base/ --model sft/ --model rlhf/ --data bench/ --out report/")
    p.add_argument("--model", action="append", required=True, help="checkpoint; repeat for one column each")
    p.add_argument("--data", required=True, help="directory with the benchmark files")
    p.add_argument("--out", required=True, help="report directory (results.json, report.md, plots/)")
    p.add_argument("--only", action="append", default=None, help=f"one of {', '.join(BENCHMARKS)} (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="first N items per benchmark file / group")
    p.add_argument("--chat", action="store_true",
                   help="generation prompts go in the Llama 2 chat template (for -Chat models); likelihoods do not")
    _model_args(p)
    _gen_args(p)
    a = p.parse_args(argv)
    from llamaforge.eval.safety import load_all, run_suite
    from llamaforge.eval.safety.common import EvalLM
    from llamaforge.eval.safety.report import write_report

    t0 = time.time()
    only = [x for o in a.only for x in o.split(",")] if a.only else None
    data = load_all(a.data, only, a.limit)  # every file is checked before any model runs
    settings = _settings(a)
    results = {}
    for name, path in zip(_names(a.model), a.model, strict=True):
        print(f"{name}:")
        results[name] = run_suite(EvalLM.from_path(path, a.device, a.dtype, a.batch_size, a.chat), data, settings)
    with atomic_dir(a.out) as tmp:
        files = write_report(tmp, results, {k: v for k, v in vars(settings).items() if k != "batch_size"})
        write_manifest(tmp, "eval safety", vars(a), [*a.model, a.data], time.time() - t0)
    print(f"wrote {Path(a.out) / files['markdown'].name} and {len(files) - 2} plots")
    return 0


# -- compare ------------------------------------------------------------------------------------
def compare_main(argv: list[str]) -> int:
    p = _parser("compare", "Answers from two models judged pairwise by a reward model (or exported for a "
                "person to judge): win / tie / loss of the first model with 95% intervals.",
                "llamaforge eval compare --model rlhf/ --model sft/ --prompts prompts.jsonl --judge rm_helpful/ "
                "--out cmp/")
    p.add_argument("--model", action="append", default=[], help="exactly two checkpoints: A then B")
    p.add_argument("--prompts", help="JSONL with prompt or messages (+ id, category)")
    p.add_argument("--judge", default=None, help="reward model directory (llamaforge reward train)")
    p.add_argument("--export", default=None, help="write a blind JSONL for human judging")
    p.add_argument("--human", default=None, help="rates from an exported file whose 'winner' fields are filled")
    p.add_argument("--chat", action="store_true", help="wrap text prompts in the Llama 2 chat template")
    p.add_argument("--tie-margin", type=float, default=0.0, help="|r(A) - r(B)| <= margin is a tie")
    p.add_argument("--out", default=None, help="directory for answers.jsonl, results.json, manifest.json")
    _model_args(p)
    _gen_args(p, temperature=0.6)
    a = p.parse_args(argv)
    from llamaforge.eval import compare as C

    t0 = time.time()
    if a.human:
        items, outcomes = C.outcomes_from_human(a.human)
        res = {"judge": "human", "overall": C.rates(outcomes), "by_category": C.by_category(items, outcomes)}
        _print_rates(res)
        if a.out:
            atomic_write_json(Path(a.out) / "results.json", res)
        return 0
    if len(a.model) != 2 or not a.prompts:
        raise UserError("give --prompts and exactly two --model (A then B), or --human FILE")
    if not a.judge and not a.export:
        raise UserError("give --judge RM_DIR, --export FILE, or both")
    items = C.load_prompts(a.prompts, chat=a.chat)
    from llamaforge.eval.generation import model_generate_fn

    answers = []
    for path in a.model:
        model, tok = _load(path, a)
        answers.append(model_generate_fn(model, tok)([it["prompt"] for it in items], _settings(a)))
        del model
    res = {"models": a.model, "n": len(items)}
    if a.judge:
        from llamaforge.align.reward import load_reward_model

        outcomes, sa, sb = C.judge_pairs(load_reward_model(a.judge), [it["prompt"] for it in items], *answers,
                                         tie_margin=a.tie_margin)
        res.update({"judge": a.judge, "overall": C.rates(outcomes), "by_category": C.by_category(items, outcomes)})
        _print_rates(res)
    if a.export:
        C.export_for_humans(a.export, items, *answers, seed=a.seed)
        print(f"wrote {a.export} for human judging (fill 'winner' with 1, 2 or tie; then --human)")
    if a.out:
        with atomic_dir(a.out) as tmp:
            with open(tmp / "answers.jsonl", "w", encoding="utf-8") as f:
                for i, it in enumerate(items):
                    rec = {"id": it["id"], "category": it["category"], "prompt": it["prompt"],
                           "answer_a": answers[0][i], "answer_b": answers[1][i]}
                    if a.judge:
                        rec.update({"reward_a": sa[i], "reward_b": sb[i], "outcome": outcomes[i]})
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            atomic_write_json(tmp / "results.json", res)
            write_manifest(tmp, "eval compare", vars(a), [*a.model, a.prompts], time.time() - t0)
    return 0


def _print_rates(res: dict) -> None:
    o = res["overall"]
    print(f"A vs B over {o['n']} prompts (judge: {res['judge']}):")
    for k in ("win", "tie", "loss"):
        lo, hi = o[k]["ci95"]
        print(f"  {k:5s} {o[k]['rate']:.3f}  (95% CI {lo:.3f}-{hi:.3f})")


# -- redteam ------------------------------------------------------------------------------------
def redteam_main(argv: list[str]) -> int:
    p = _parser("redteam", "Adversarial prompts (single and multi-turn) by risk category; answers judged by "
                "the safety reward model and the toxicity classifier.",
                "llamaforge eval redteam --model rlhf/ --prompts redteam.jsonl --safety-rm rm_safety/ --out rt/")
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", required=True, help="JSONL: category + prompt or turns (+ id, system)")
    p.add_argument("--safety-rm", default=None, help="safety reward model directory")
    p.add_argument("--rm-threshold", type=float, default=0.5, help="violation when sigmoid(score) < this")
    p.add_argument("--tox-threshold", type=float, default=0.5, help="violation when toxicity >= this")
    p.add_argument("--worst", type=int, default=10, help="worst answers listed in worst.md")
    p.add_argument("--out", required=True, help="directory for results.json, dialogs.jsonl, worst.md")
    _model_args(p)
    _gen_args(p)
    a = p.parse_args(argv)
    from llamaforge.eval import redteam as R
    from llamaforge.eval.generation import model_generate_fn

    t0 = time.time()
    items = R.load_redteam(a.prompts)
    model, tok = _load(a.model, a)
    dialogs = R.converse(items, model_generate_fn(model, tok), _settings(a))
    rm = None
    if a.safety_rm:
        from llamaforge.align.reward import load_reward_model

        rm = load_reward_model(a.safety_rm)
    res = R.judge(items, dialogs, rm, a.rm_threshold, a.tox_threshold, a.worst)
    with atomic_dir(a.out) as tmp:
        atomic_write_json(tmp / "results.json", res)
        with open(tmp / "dialogs.jsonl", "w", encoding="utf-8") as f:
            for it, d in zip(items, dialogs, strict=True):
                f.write(json.dumps({"id": it["id"], "category": it["category"], "messages": d},
                                   ensure_ascii=False) + "\n")
        (tmp / "worst.md").write_text(R.worst_markdown(res), encoding="utf-8")
        write_manifest(tmp, "eval redteam", vars(a), [a.model, a.prompts], time.time() - t0)
    print(f"violation rate {res['violation_rate']:.3f} over {res['n']} conversations; "
          + ", ".join(f"{k}: {v['violation_rate']:.2f}" for k, v in res["by_category"].items()))
    return 0

