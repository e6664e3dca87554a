"""`llamaforge data clean INPUT... --out DIR [--config FILE] [--section.key=value ...]`."""

from __future__ import annotations

import argparse
import os
import sys

from llamaforge.config import load_config
from llamaforge.data.clean.config import CleanConfig

EPILOG = """\
example:
  llamaforge data clean raw/ 'more/*.jsonl.zst' --out clean/ --config clean.toml \\
      --workers 8 --skip-bad --language.languages=en,fr --toxicity.action=drop

Steps, in order (each a [section] of the TOML config, with enabled and action = "drop"|"annotate"):
  read, normalize, dedup (exact documents + boilerplate lines), neardup (MinHash LSH), language,
  quality, toxicity, privacy (domain blocklist + PII scrubbing), writer.
Output: OUT/shard-NNNNN.jsonl.zst, OUT/manifest.json (config, input hashes, counts per step),
OUT/config.toml. Re-running the same command resumes after the last complete shard.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamaforge data clean", description="Clean, deduplicate and filter a corpus.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files (.txt .jsonl .jsonl.gz .jsonl.zst .parquet), directories or globs")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", help="TOML file with one section per step")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: all cores; 1 runs in this process)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records, count and list them")
    p.add_argument("--text-field", help="JSON/parquet field holding the text (default: text)")
    p.add_argument("--restart", action="store_true", help="discard a previous or partial run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    if args.skip_bad:
        overrides.append("--read.skip_bad=true")
    if args.text_field:
        overrides.append(f"--read.text_field={args.text_field}")
    cfg = load_config(CleanConfig, args.config, overrides)
    from llamaforge.data.clean.pipeline import clean
    from llamaforge.data.clean.summary import funnel_table

    manifest = clean(args.inputs, args.out, cfg, workers=max(1, args.workers), restart=args.restart,
                     progress=not args.no_progress)
    print(funnel_table(manifest["steps"]))
    t = manifest["totals"]
    print(f"\n{t['docs_out']:,} of {t['docs_in']:,} documents written to {args.out} "
          f"({len(manifest['shards'])} shards, {t['output_bytes'] / 1e6:.1f} MB); "
          f"{t['bad_records']:,} bad records; {manifest['timing']['input_mb_per_s']:.2f} MB/s input")
    if manifest["bad_records"]["examples"]:
        print("first bad records:", file=sys.stderr)
        for e in manifest["bad_records"]["examples"][:5]:
            loc = f"{e['file']}:{e['line']}" if e["line"] else e["file"]
            print(f"  {loc}: {e['reason']}", file=sys.stderr)
    return 0
