"""How fast the alignment world is made and checked, and how small its answer vocabulary is.

Run: .venv/bin/python benchmarks/world.py   (about 10 s; prints tables)
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llamaforge.align.world import build_world, make_world, verify, world_reward  # noqa: E402
from llamaforge.align.world_instructions import is_french  # noqa: E402


def median_time(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    print("| size (SFT examples) | records in all files | `world make` wall s (median of 3) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (1000, 3000, 10000):
            n = sum(len(v) for v in build_world(0, size).values())
            t = median_time(lambda s=size: make_world(Path(tmp) / f"w{s}", seed=0, size=s))
            print(f"| {size} | {n} | {t:.2f} |")

    world = build_world(0, 3000)
    sft = world["sft.jsonl"]
    answers = [m["content"] for r in sft for m in r["messages"] if m["role"] == "assistant"]
    words = Counter(w for a in answers for w in re.findall(r"[^\W\d_]+|\d", a.lower()))
    task_words = Counter(w for r in sft if r.get("args", {}).get("word") for w in [r["args"]["word"]])
    print("\n| SFT answers (size 3000) | value |")
    print("|---|---|")
    print(f"| answers | {len(answers)} |")
    print(f"| mean / max characters | {statistics.mean(map(len, answers)):.1f} / {max(map(len, answers))} |")
    print(f"| distinct words and digits | {len(words)} |")
    print(f"| of which task words (and their reversals) | {len(task_words)} (x2) |")
    top = sum(c for _, c in words.most_common(100)) / sum(words.values())
    print(f"| share of word occurrences covered by the 100 most common | {top:.1%} |")

    is_french("warm up")  # load langid once (about 1.3 s) outside the timing
    plain = [(r, r["messages"][-1]["content"]) for r in sft if r["category"] != "multi"
             and not (r.get("instruction") or {}).get("type") == "french"]
    french = [(r, r["messages"][-1]["content"]) for r in sft if (r.get("instruction") or {}).get("type") == "french"]
    print("\n| check | calls | microseconds per call (median of 3) |")
    print("|---|---|---|")
    for name, pairs, fn in (("verify, no French instruction", plain, verify),
                            ("verify, French instruction (langid)", french, verify),
                            ("world_reward, no French instruction", plain, world_reward)):
        t = median_time(lambda p=pairs, f=fn: [f(r, a) for r, a in p])
        print(f"| {name} | {len(pairs)} | {1e6 * t / len(pairs):.1f} |")


if __name__ == "__main__":
    main()
