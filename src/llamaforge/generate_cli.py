"""`llamaforge generate`: complete one prompt (streamed), or every record of a JSONL file (batched, resumable).

Batch mode appends answered records to --out a chunk at a time (one write + fsync per chunk), so
an interrupted run loses at most the chunk in flight; a re-run drops a torn last line and skips
the records already answered (matched by their content, so the input may be re-ordered or grown).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from llamaforge.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llamaforge generate",
        description="Generate text with a model: one --prompt (streamed to stdout) or a JSONL file of records.",
        epilog="examples:\n"
               "  llamaforge generate --model runs/pretrain/final --prompt 'Once upon a time' --max-new-tokens 64\n"
               "  llamaforge generate --model runs/sft/final --chat --input prompts.jsonl --out answers.jsonl\n"
               "records have 'prompt' (or, with --chat, 'messages'); each is written back with 'answer' added.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="checkpoint directory (native, Meta or Hugging Face layout)")
    p.add_argument("--tokenizer", help="tokenizer.model (default: the one in the checkpoint directory)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="text to complete (with --chat: the user message)")
    src.add_argument("--input", help="JSONL records with 'prompt' or (with --chat) 'messages'")
    p.add_argument("--out", help="output JSONL (batch mode); re-running skips records already answered")
    p.add_argument("--chat", action="store_true", help="use the Llama 2 chat template")
    p.add_argument("--system", help="system prompt for --chat records that have none")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.6, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="record i uses seed + i")
    p.add_argument("--batch-size", type=int, default=16, help="rows decoded together")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records (counted) instead of stopping")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", help="float32, bfloat16 or float16 (default: as stored)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.input and not args.out:
        raise UserError("--input needs --out FILE.jsonl")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    from llamaforge.checkpoint import find_tokenizer, load_model
    from llamaforge.sampling import SamplingParams
    from llamaforge.tokenizer import Tokenizer

    model = load_model(args.model, args.device, args.dtype)
    tok = Tokenizer(args.tokenizer) if args.tokenizer else find_tokenizer(args.model)
    if tok is None:
        raise UserError(f"no tokenizer.model in {args.model}; pass --tokenizer PATH")
    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.stop,
                            seed=args.seed).validate("generate")
    if args.prompt is not None:
        return _one(model, tok, args, params)
    return _batch(model, tok, args, params)


def _prompt_of(rec: dict, args, where: str):
    """The prompt of a record: a string, or (with --chat) a list of messages."""
    if args.chat:
        if "messages" in rec:
            msgs = rec["messages"]
            if not isinstance(msgs, list):
                raise UserError(f"{where}: 'messages' must be a list")
        elif isinstance(rec.get("prompt"), str) and rec["prompt"].strip():
            msgs = [{"role": "user", "content": rec["prompt"]}]
        else:
            raise UserError(f"{where}: a --chat record needs 'messages' or a non-empty 'prompt'")
        if args.system and msgs and isinstance(msgs[0], dict) and msgs[0].get("role") != "system":
            msgs = [{"role": "system", "content": args.system}, *msgs]
        from llamaforge.tokenizer import validate_dialog

        validate_dialog(msgs, where)
        if msgs[-1]["role"] != "user":
            raise UserError(f"{where}: the last message must be from the user")
        return msgs
    if not isinstance(rec.get("prompt"), str) or not rec["prompt"]:
        raise UserError(f"{where}: the record needs a non-empty string 'prompt' (or use --chat with 'messages')")
    return rec["prompt"]


def _one(model, tok, args, params) -> int:
    from llamaforge.generate import BatchDecoder, encode_prompt

    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    if args.chat and args.system:
        prompt.insert(0, {"role": "system", "content": args.system})
    ids, prefix = encode_prompt(tok, prompt)
    dec = BatchDecoder(model, tok, 1, min(model.args.max_seq_len, len(ids) + params.max_new_tokens), args.compile)
    dec.add(0, ids, params, prefix_id=prefix)
    while dec.busy:
        for ev in dec.step():
            sys.stdout.write(ev.text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _key(rec: dict) -> str:
    return json.dumps({k: v for k, v in rec.items() if k != "answer"}, sort_keys=True, ensure_ascii=False)


def _read_records(path: Path, args) -> tuple[list[tuple[int, dict, Any]], int]:
    if not path.is_file():
        raise UserError(f"input {path} not found")
    out, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise UserError(f"{where}: a record must be a JSON object")
                out.append((lineno, rec, _prompt_of(rec, args, where)))
            except (json.JSONDecodeError, UserError) as e:
                if not args.skip_bad:
                    msg = f"{where}: not valid JSON ({e})" if isinstance(e, json.JSONDecodeError) else str(e)
                    raise UserError(f"{msg}; fix it or pass --skip-bad") from None
                bad += 1
    return out, bad


def _answered(out: Path) -> Counter:
    """Keys of the records already in --out; a torn last line (crash mid-write) is removed."""
    done: Counter = Counter()
    if not out.exists():
        return done
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    good = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
            if not line.endswith("\n") or not isinstance(rec, dict) or "answer" not in rec:
                raise ValueError
        except ValueError:
            if i == len(lines) - 1:
                from llamaforge.io import atomic_write_text

                print(f"{out}: dropping an incomplete last line (interrupted run)", file=sys.stderr)
                atomic_write_text(out, "".join(good))
                break
            raise UserError(f"{out}:{i + 1}: not an answered record; is --out the right file?") from None
        good.append(line)
        done[_key(rec)] += 1
    return done


def _batch(model, tok, args, params) -> int:
    from dataclasses import replace

    from llamaforge.generate import BatchDecoder, encode_prompt

    t0 = time.time()
    src, out = Path(args.input), Path(args.out)
    records, bad = _read_records(src, args)
    done = _answered(out)
    todo = []
    for idx, (lineno, rec, prompt) in enumerate(records):
        k = _key(rec)
        if done[k] > 0:
            done[k] -= 1
        else:
            ids, prefix = encode_prompt(tok, prompt, f"{src}:{lineno}")
            room = model.args.max_seq_len - len(ids)
            if room < 1:
                raise UserError(f"{src}:{lineno}: the prompt ({len(ids)} tokens) fills the context "
                                f"({model.args.max_seq_len}); shorten it")
            sp = replace(params, seed=args.seed + idx, max_new_tokens=min(params.max_new_tokens, room))
            todo.append((rec, ids, prefix, sp))
    skipped = len(records) - len(todo)
    if not todo:
        print(f"nothing to do: {len(records)} records already answered in {out}", file=sys.stderr)
        return 0
    longest = max(len(t[1]) + t[3].max_new_tokens for t in todo)
    dec = BatchDecoder(model, tok, min(args.batch_size, len(todo)), min(longest, model.args.max_seq_len),
                       args.compile)
    out.parent.mkdir(parents=True, exist_ok=True)
    chunk, n_tokens, t1 = args.batch_size * 4, 0, time.time()
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        answers = [""] * len(part)
        for i, (_, ids, prefix, sp) in enumerate(part):
            dec.add(i, ids, sp, prefix_id=prefix)
        while dec.busy:
            for ev in dec.step():
                answers[ev.rid] += ev.text
                n_tokens += 1
        lines = "".join(json.dumps({**rec, "answer": a}, ensure_ascii=False) + "\n"
                        for (rec, *_), a in zip(part, answers))
        with open(out, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        print(f"{min(start + chunk, len(todo))}/{len(todo)} records", file=sys.stderr)
    dt = time.time() - t1
    print(f"answered {len(todo)} records ({skipped} already done, {bad} malformed skipped) into {out} in "
          f"{time.time() - t0:.1f}s ({n_tokens / dt:.0f} generated tokens/s)", file=sys.stderr)
    return 0
