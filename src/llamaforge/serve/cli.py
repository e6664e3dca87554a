"""`llamaforge serve`: load a checkpoint and serve it over the OpenAI API (extra `serve`)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from llamaforge.errors import UserError


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="llamaforge serve",
        description="OpenAI-compatible HTTP server (/v1/models, /v1/completions, /v1/chat/completions, /health) "
                    "with continuous batching.",
        epilog="example: llamaforge serve --model runs/sft/final --port 8000 --api-key secret --max-batch 16\n"
               "then: curl -H 'Authorization: Bearer secret' localhost:8000/v1/chat/completions "
               "-d '{\"model\": \"final\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="checkpoint directory (native, Meta or Hugging Face layout)")
    p.add_argument("--tokenizer", help="tokenizer.model (default: the one in the checkpoint directory)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("LLAMAFORGE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $LLAMAFORGE_API_KEY, else no key)")
    p.add_argument("--served-model-name", help="model id clients use (default: the checkpoint directory's name)")
    p.add_argument("--max-batch", type=int, default=16, help="rows decoded together (KV cache slots)")
    p.add_argument("--max-queue", type=int, default=64, help="waiting rows beyond which requests get 503")
    p.add_argument("--context", type=int, help="context window in tokens (default: the model's max_seq_len)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", help="float32, bfloat16 or float16 (default: as stored)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (slow start)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    if args.max_batch < 1 or args.max_queue < 0:
        raise UserError("--max-batch must be >= 1 and --max-queue >= 0")

    try:
        import uvicorn
    except ModuleNotFoundError:
        raise UserError("llamaforge serve needs the 'serve' extra: pip install 'llamaforge[serve]'") from None
    import torch

    from llamaforge.checkpoint import find_tokenizer, load_model
    from llamaforge.serve.app import create_app
    from llamaforge.serve.engine import Engine
    from llamaforge.tokenizer import Tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, args.device, args.dtype)
    tok = Tokenizer(args.tokenizer) if args.tokenizer else find_tokenizer(args.model)
    if tok is None:
        raise UserError(f"no tokenizer.model in {args.model}; pass --tokenizer PATH")
    context = args.context or model.args.max_seq_len
    if context > model.args.max_seq_len:
        raise UserError(f"--context {context} exceeds the model's max_seq_len {model.args.max_seq_len}")
    name = args.served_model_name or Path(args.model).resolve().name
    engine = Engine(model, tok, args.max_batch, args.max_queue, context, compile=args.compile)
    app = create_app(engine, name, args.api_key)
    logging.basicConfig(level=args.log_level.upper())
    print(f"serving {name!r} on http://{args.host}:{args.port}/v1 (max batch {args.max_batch}, "
          f"context {context}{', api key required' if args.api_key else ''})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
