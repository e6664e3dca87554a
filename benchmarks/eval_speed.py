"""Loglikelihood requests/s: llamaforge's lm-eval bridge vs lm_eval's own `hf` model, same weights.

Builds a tokenizer (stdlib sources) and a random-weight Llama (default d512, 8 layers, 8 heads,
4 kv heads), saves it natively and as HF (save_model(format="hf")), and times both lm_eval models
on the same multiple-choice-like requests (contexts of 40-400 tokens, continuations of 1-20),
checking that their loglikelihoods agree. Run: .venv/bin/python benchmarks/eval_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch


def build(tmp: Path, dim: int, layers: int, vocab: int) -> tuple[Path, Path]:
    from llamaforge.checkpoint import save_model
    from llamaforge.data.corpus import stdlib_files
    from llamaforge.model.args import ModelArgs
    from llamaforge.model.llama import Transformer
    from llamaforge.tokenizer import Tokenizer, train_tokenizer

    tok = Tokenizer(train_tokenizer(stdlib_files(max_bytes=3_000_000), vocab, tmp / "tok"))
    args = ModelArgs(dim=dim, n_layers=layers, n_heads=8, n_kv_heads=4, vocab_size=tok.n_words, multiple_of=64,
                     max_seq_len=1024)
    torch.manual_seed(0)
    model = Transformer(args)
    model.init_weights()
    print(f"model: d{dim}, {layers} layers, vocab {tok.n_words}, {model.num_params() / 1e6:.1f}M params")
    return save_model(model, tmp / "native", tokenizer=tok), save_model(model, tmp / "hf", format="hf", tokenizer=tok)


def requests(n: int, seed: int = 0):
    from lm_eval.api.instance import Instance

    from llamaforge.data.corpus import stdlib_files

    text = "".join(p.read_text(errors="ignore") for p in stdlib_files(max_bytes=400_000))
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = rng.randrange(0, len(text) - 3000)
        while not text[a].isalpha():  # transformers' Llama tokenizer drops a leading space: start on a letter
            a += 1
        ctx_chars, cont_chars = rng.randint(150, 1500), rng.randint(3, 60)
        b = a + ctx_chars
        while not (text[b] == " " and text[b + 1].isalpha()):  # continuations start a word, as in MC tasks
            b += 1
        ctx, cont = text[a:b], text[b:b + cont_chars]
        out.append(Instance("loglikelihood", {}, (ctx, cont), i))
    return out


def timed(lm, reqs, repeats: int) -> tuple[float, list]:
    best, res = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = lm.loglikelihood(reqs, disable_tqdm=True)
        best = min(best, time.perf_counter() - t0)
    return best, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small model, few requests (a smoke run)")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timed passes; the best is kept")
    a = ap.parse_args()
    dim, layers, n = (128, 2, 32) if a.quick else (512, 8, a.n)
    torch.set_num_threads(torch.get_num_threads())
    from lm_eval.models.huggingface import HFLM

    from llamaforge.eval.harness import LlamaforgeLM

    with tempfile.TemporaryDirectory() as d:
        native, hf_dir = build(Path(d), dim, layers, 4000)
        reqs = requests(n)
        ours = LlamaforgeLM(path=str(native), batch_size=a.batch_size, device=a.device)
        theirs = HFLM(pretrained=str(hf_dir), add_bos_token=True, batch_size=a.batch_size, device=a.device,
                      dtype="float32")
        bf = LlamaforgeLM(path=str(native), batch_size=a.batch_size, device=a.device, dtype="bfloat16")
        engines = {"lm_eval hf (fp32)": theirs, "llamaforge (fp32)": ours, "llamaforge (bf16 weights)": bf}
        best = {k: float("inf") for k in engines}
        res = {}
        for lm in engines.values():  # warm up
            timed(lm, reqs[:8], 1)
        for _ in range(a.repeats):  # interleaved, so a noisy neighbour slows all engines alike
            for k, lm in engines.items():
                t, res[k] = timed(lm, reqs, 1)
                best[k] = min(best[k], t)
        t_hf = best["lm_eval hf (fp32)"]
        rows = [(k, t, n / t, t_hf / t) for k, t in best.items()]
        diff = max(abs(x[0] - y[0]) for x, y in zip(res["lm_eval hf (fp32)"], res["llamaforge (fp32)"], strict=True))
        diff_bf = max(abs(x[0] - y[0]) for x, y in zip(res["lm_eval hf (fp32)"], res["llamaforge (bf16 weights)"],
                                                       strict=True))
    tokens = sum(len(r.args[0]) + len(r.args[1]) for r in reqs)
    print(f"{n} requests ({tokens} characters), batch size {a.batch_size}, device {a.device}, "
          f"{torch.get_num_threads()} threads")
    print("| engine | seconds | requests/s | speed-up vs lm_eval hf |")
    print("|---|---|---|---|")
    for name, t, rps, x in rows:
        print(f"| {name} | {t:.2f} | {rps:.1f} | {x:.2f}x |")
    print(f"max |loglikelihood difference| vs lm_eval hf: fp32 {diff:.2e}, bf16 {diff_bf:.2e}")


if __name__ == "__main__":
    main()
