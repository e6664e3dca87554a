"""`llamaforge chat`: a multi-turn REPL in the Llama 2 chat template, streaming the answer as it comes.

The dialogue is kept within the context window: when the prompt plus the answer budget would
not fit, the oldest user/assistant turns are dropped (the system prompt stays) with a notice.
Commands: /reset, /system TEXT, /exit (or end of input).
"""

from __future__ import annotations

import argparse
import itertools
import sys

from llamaforge.errors import UserError

HELP = "commands: /reset (forget the dialogue), /system TEXT (set the system prompt; empty clears it), /exit"
MIN_ANSWER = 16  # fewer free tokens than this for the answer: the message is too long


def fit_dialog(tokenizer, system: str | None, turns: list[dict], max_new: int, context: int
               ) -> tuple[list[int], int, int]:
    """Encode system + turns, dropping the oldest turns until prompt + answer fit.

    Returns (prompt ids, number of messages dropped, answer budget). The last turn (the user's
    new message) is never dropped; if it alone leaves less than MIN_ANSWER tokens, UserError.
    """
    dropped = 0
    while True:
        msgs = ([{"role": "system", "content": system}] if system else []) + turns[dropped:]
        ids = tokenizer.encode_chat_prompt(msgs)
        room = context - len(ids)
        if room >= max_new or len(turns) - dropped <= 1:
            break
        dropped += 2  # one user message and its answer
    if room < MIN_ANSWER:
        raise UserError(f"this message needs {len(ids)} tokens; the context is {context}: shorten it")
    return ids, dropped, min(max_new, room)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="llamaforge chat",
        description="Chat with a model in the terminal (Llama 2 chat template, streamed answers).\n" + HELP,
        epilog="example: llamaforge chat --model runs/sft/final --system 'You are a concise assistant.'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--tokenizer", help="tokenizer.model (default: the one in the checkpoint directory)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.6, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, help="seed of the first answer (answer i uses seed + i)")
    p.add_argument("--context", type=int, help="context window in tokens (default: the model's max_seq_len)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", help="float32, bfloat16 or float16 (default: as stored)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    args = p.parse_args(argv)

    from llamaforge.checkpoint import find_tokenizer, load_model
    from llamaforge.generate import BatchDecoder
    from llamaforge.sampling import SamplingParams
    from llamaforge.tokenizer import Tokenizer

    model = load_model(args.model, args.device, args.dtype)
    tok = Tokenizer(args.tokenizer) if args.tokenizer else find_tokenizer(args.model)
    if tok is None:
        raise UserError(f"no tokenizer.model in {args.model}; pass --tokenizer PATH")
    context = min(args.context or model.args.max_seq_len, model.args.max_seq_len)
    SamplingParams(args.max_new_tokens, args.temperature, args.top_p).validate("chat")
    dec = BatchDecoder(model, tok, 1, context, args.compile)
    system, turns = args.system, []
    interactive = sys.stdin.isatty()
    print(f"chatting with {args.model} (context {context} tokens). {HELP}", file=sys.stderr)
    for n in itertools.count():
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd, _, rest = text.partition(" ")
            if cmd == "/exit":
                break
            if cmd == "/reset":
                turns = []
                print("[dialogue reset]", file=sys.stderr)
            elif cmd == "/system":
                system, turns = rest.strip() or None, []
                print(f"[system prompt {'set' if system else 'cleared'}; dialogue reset]", file=sys.stderr)
            else:
                print(f"[unknown command {cmd}] {HELP}", file=sys.stderr)
            continue
        turns.append({"role": "user", "content": text})
        try:
            ids, dropped, budget = fit_dialog(tok, system, turns, args.max_new_tokens, context)
        except UserError as e:
            turns.pop()
            print(f"[{e}]", file=sys.stderr)
            continue
        if dropped:
            turns = turns[dropped:]
            print(f"[context full: dropped the {dropped // 2} oldest turn(s)]", file=sys.stderr)
        seed = None if args.seed is None else args.seed + n
        dec.add(n, ids, SamplingParams(budget, args.temperature, args.top_p, seed=seed))
        answer = ""
        try:
            while dec.busy:
                for ev in dec.step():
                    answer += ev.text
                    print(ev.text, end="", flush=True)
        except KeyboardInterrupt:
            dec.cancel(n)
            dec.step()
            print(" [interrupted]", end="")
        print(flush=True)
        if answer.strip():
            turns.append({"role": "assistant", "content": answer})
        else:
            turns.pop()  # an empty answer cannot be encoded as a turn
            print("[empty answer; this turn is not kept]", file=sys.stderr)
    return 0
