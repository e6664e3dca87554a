"""The `llamaforge` command: a table of sub-commands, each a module with `main(argv) -> int`.

Modules are imported only when their command runs, so `llamaforge --help` is instant and a
command whose optional extra is missing fails alone, with a message naming the extra.
"""

from __future__ import annotations

import importlib
import sys

from llamaforge.errors import UserError

# (words, "module:function", one-line help). Longest word match wins.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "llamaforge.demo:main", "run the whole pipeline on built-in data (what `make demo` runs)"),
    ("tokenizer train", "llamaforge.tokenizer:cli_train", "train a SentencePiece BPE tokenizer with LLaMA's settings"),
    ("convert", "llamaforge.checkpoint.cli:main", "convert a checkpoint between native, Meta and Hugging Face layouts"),
    ("data tokenize", "llamaforge.data.tokenize:main", "tokenize text/jsonl/parquet into token shards"),
    ("data clean", "llamaforge.data.clean.cli:main", "clean, deduplicate and filter a corpus"),
    ("data report", "llamaforge.data.report:main", "analyse a corpus as Llama 2 section 4.1 did"),
    ("pretrain", "llamaforge.train.pretrain:main", "pretrain a model (single process or torchrun)"),
    ("world make", "llamaforge.align.world:main", "write the built-in alignment world (SFT, prefs, prompts)"),
    ("sft", "llamaforge.align.sft:main", "supervised fine-tuning on chat data"),
    ("gatt synthesize", "llamaforge.align.gatt:main", "build Ghost Attention training dialogues"),
    ("reward train", "llamaforge.align.reward_cli:train_main", "train a helpfulness or safety reward model"),
    ("reward score", "llamaforge.align.reward_cli:score_main", "score answers with a reward model"),
    ("reward sample-pairs", "llamaforge.align.reward_cli:pairs_main", "sample answer pairs for annotation"),
    ("reward import", "llamaforge.align.reward_cli:import_main", "import rated pairs (ours, HH-RLHF, SHP)"),
    ("rlhf rs", "llamaforge.align.rlhf_cli:rs_main", "iterative rejection sampling"),
    ("rlhf ppo", "llamaforge.align.rlhf_cli:ppo_main", "PPO with the safety-gated combined reward"),
    ("generate", "llamaforge.generate_cli:main", "generate text for a prompt or a JSONL file"),
    ("chat", "llamaforge.chat:main", "chat with a model in the terminal"),
    ("serve", "llamaforge.serve.cli:main", "OpenAI-compatible HTTP server"),
    ("eval ppl", "llamaforge.eval.cli:ppl_main", "perplexity and bits per byte"),
    ("eval harness", "llamaforge.eval.cli:harness_main", "run lm-evaluation-harness tasks offline"),
    ("eval safety", "llamaforge.eval.cli:safety_main", "safety and bias benchmarks of the papers"),
    ("eval gatt", "llamaforge.align.gatt_eval:main", "multi-turn system-instruction retention"),
    ("eval compare", "llamaforge.eval.cli:compare_main", "pairwise model comparison judged by a reward model"),
    ("eval redteam", "llamaforge.eval.cli:redteam_main", "adversarial prompts by risk category"),
    ("plan", "llamaforge.plan:main", "scaling-law, compute and memory planner"),
    ("carbon", "llamaforge.carbon:main", "carbon footprint of training (the papers' formula)"),
    ("card", "llamaforge.card:main", "assemble a model card from a model's lineage"),
]


def _usage() -> str:
    width = max(len(w) for w, _, _ in COMMANDS)
    lines = ["usage: llamaforge <command> [options]   (each command has --help with an example)", "", "commands:"]
    lines += [f"  {w.ljust(width)}  {h}" for w, _, h in COMMANDS]
    return "\n".join(lines)


def resolve(argv: list[str]) -> tuple[str, str, list[str]] | None:
    """Find the longest command whose words start argv; return (words, target, rest)."""
    best = None
    for words, target, _ in COMMANDS:
        parts = words.split()
        if argv[: len(parts)] == parts and (best is None or len(parts) > len(best[0].split())):
            best = (words, target, argv[len(parts):])
    return best


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from llamaforge import __version__

        print(__version__)
        return 0
    found = resolve(argv)
    if found is None:
        groups = sorted({w.split()[0] for w, _, _ in COMMANDS if len(w.split()) > 1})
        if argv[0] in groups:
            subs = [w for w, _, _ in COMMANDS if w.split()[0] == argv[0]]
            print(f"llamaforge {argv[0]}: choose one of: {', '.join(subs)}", file=sys.stderr)
        else:
            print(f"llamaforge: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    words, target, rest = found
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("llamaforge"):
            print(f"llamaforge {words}: not available in this version ({e.name} is missing)", file=sys.stderr)
        else:
            print(f"llamaforge {words}: needs the Python package {e.name!r}; "
                  f"install the extra that provides it (see README, 'Extras'): {e}", file=sys.stderr)
        return 2
    try:
        rc = getattr(module, func_name)(rest)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"llamaforge {words}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
