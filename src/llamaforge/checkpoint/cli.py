"""`llamaforge convert SRC DST --to hf|meta|native [--shards N]`."""

from __future__ import annotations

import argparse
import time

from llamaforge.checkpoint import FORMATS, detect_format, load_model, save_model
from llamaforge.io import write_manifest


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="llamaforge convert",
        description="Convert a checkpoint between the native, Meta (consolidated.NN.pth) and Hugging Face layouts. "
                    "The source layout is detected; the tokenizer travels with the weights.",
        epilog="example: llamaforge convert runs/tiny/final hf_out --to hf\n"
               "         llamaforge convert hf_out meta_out --to meta --shards 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", required=True, choices=FORMATS)
    p.add_argument("--shards", type=int, default=1, help="number of weight files (meta: model-parallel shards)")
    p.add_argument("--dtype", default=None, help="cast weights (float32, bfloat16, float16)")
    args = p.parse_args(argv)
    t0 = time.time()
    src_fmt = detect_format(args.src)
    model = load_model(args.src, dtype=args.dtype)
    save_model(model, args.dst, format=args.to, shards=args.shards, tokenizer=args.src)
    if args.to == "native":
        write_manifest(args.dst, "convert", vars(args), [args.src], time.time() - t0)
    print(f"{args.src} ({src_fmt}) -> {args.dst} ({args.to}, {args.shards} shard(s)) in {time.time() - t0:.1f}s")
    return 0
