"""Running batches through worker processes in input order, with bounded memory, and the
progress bar (input MB/s, text MB/s, documents/s)."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class Executor:
    """`workers` <= 1 runs in this process; otherwise a process pool. `map` yields results in task
    order and keeps at most `window` tasks in flight, so reading never runs ahead of the workers."""

    def __init__(self, workers: int, initializer: Callable, initargs: tuple):
        self.workers = workers
        self.pool = None
        if workers <= 1:
            initializer(*initargs)
        else:
            # fork shares the loaded classifiers with the workers; elsewhere spawn re-imports them.
            method = "fork" if "fork" in mp.get_all_start_methods() and sys.platform == "linux" else "spawn"
            self.pool = mp.get_context(method).Pool(workers, initializer, initargs)

    def map(self, fn: Callable, tasks: Iterable, window: int | None = None) -> Iterator[Any]:
        if self.pool is None:
            for t in tasks:
                yield fn(t)
            return
        window = window or 2 * self.workers + 2
        pending: deque = deque()
        for t in tasks:
            pending.append(self.pool.apply_async(fn, (t,)))
            if len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self, ok: bool = True) -> None:
        if self.pool is not None:
            if ok:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
            self.pool = None


class Progress:
    """A tqdm bar over input bytes, with documents/s and text MB/s beside it."""

    def __init__(self, desc: str, total: int, enabled: bool):
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread: worker pools are forked after bars exist
        self.bar = tqdm(total=total or None, desc=desc, unit="B", unit_scale=True, disable=not enabled,
                        mininterval=0.5, dynamic_ncols=True, file=sys.stderr)
        self.start = time.perf_counter()
        self.docs = 0
        self.text = 0
        self.offsets: dict[str, int] = {}

    def advance(self, source: str, offset: int, docs: int, text_bytes: int) -> None:
        delta = offset - self.offsets.get(source, 0)
        self.offsets[source] = offset
        self.docs += docs
        self.text += text_bytes
        dt = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.docs / dt:,.0f} docs/s, {self.text / dt / 1e6:.2f} MB/s text", refresh=False)
        self.bar.update(max(delta, 0))

    def close(self) -> float:
        self.bar.close()
        return time.perf_counter() - self.start
