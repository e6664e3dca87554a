"""The scheduler: one thread runs the BatchDecoder; requests come and go between steps.

Continuous batching: a request submitted while others decode joins the batch at the next step
(its prompt is prefilled, then it decodes with everyone) and leaves the moment it finishes, its
slot going to the next waiting request. Waiting requests are bounded (`max_queue`): beyond that
`submit` raises QueueFull and the server answers 503. Events go back to each request's asyncio
queue on the server's event loop, one hand-over per step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import defaultdict
from typing import Any

import torch

from llamaforge.generate import BatchDecoder, Event
from llamaforge.sampling import SamplingParams, top_pairs

log = logging.getLogger("llamaforge.serve")


class QueueFull(Exception):
    pass


class Engine:
    def __init__(self, model: torch.nn.Module, tokenizer, max_batch: int = 16, max_queue: int = 64,
                 max_len: int | None = None, compile: bool = False):
        self.decoder = BatchDecoder(model, tokenizer, max_batch, max_len, compile=compile)
        self.tokenizer = tokenizer
        self.context = self.decoder.max_len
        self.max_batch, self.max_queue = max_batch, max_queue
        self._ids = itertools.count()
        self._routes: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.steps = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llamaforge-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- requests (called from the event loop) -----------------------------------------------------
    def submit(self, prompts: list[tuple[list[int], SamplingParams, int | None]], queue: asyncio.Queue) -> list[int]:
        """Queue rows (prompt ids, params, detokenization prefix) whose events go to `queue`.

        All rows of one request are admitted together or not at all; QueueFull when more than
        max_queue rows would wait for a free slot.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            free = self.max_batch - self.decoder.n_active
            if len(self.decoder.pending) + len(prompts) - max(free, 0) > self.max_queue:
                raise QueueFull()
            rids = [next(self._ids) for _ in prompts]
            for rid in rids:
                self._routes[rid] = (loop, queue)
        try:
            for rid, (ids, params, prefix) in zip(rids, prompts):
                self.decoder.add(rid, ids, params, text=True, prefix_id=prefix)
        except Exception:
            self.cancel(rids)
            raise
        self._wake.set()
        return rids

    def cancel(self, rids: list[int]) -> None:
        """Free the rows of a request that went away (client disconnect)."""
        with self._lock:
            for rid in rids:
                if self._routes.pop(rid, None) is not None:
                    self.decoder.cancel(rid)
        self._wake.set()

    @torch.inference_mode()
    def prompt_logprobs(self, ids: list[int], n_top: int = 0) -> list[Event]:
        """Each prompt token with its log-prob given the tokens before it (None for the first) and the
        n_top most likely tokens there: one forward, outside the batch (for `echo`). Reads the weights
        only, so it may run beside the decode thread."""
        model = self.decoder.model
        x = torch.tensor([ids], device=self.decoder.tok.device)
        lsm = model(x)[0, :-1].float().log_softmax(-1)  # temperature 1: as the sampled tokens' log-probs
        lp = lsm.gather(-1, x[0, 1:].unsqueeze(-1)).squeeze(-1).tolist()
        tops = top_pairs(*lsm.topk(n_top, dim=-1)) if n_top else [None] * len(lp)
        return [Event(None, ids[0], None, "", None, None)] + [
            Event(None, t, v, "", None, top) for t, v, top in zip(ids[1:], lp, tops)]

    @property
    def load(self) -> dict[str, int]:
        return {"running": self.decoder.n_active, "waiting": len(self.decoder.pending),
                "max_batch": self.max_batch, "max_queue": self.max_queue}

    # -- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            if not self.decoder.busy:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                events = self.decoder.step()
                self.steps += 1
            except Exception as e:  # a bad step must not take the server down
                log.exception("decode step failed")
                self._fail_all(e)
                continue
            self._dispatch(events)

    def _dispatch(self, events: list[Event]) -> None:
        by_loop: dict[Any, list[tuple[asyncio.Queue, Event]]] = defaultdict(list)
        with self._lock:
            for ev in events:
                route = self._routes.get(ev.rid)
                if route is None:
                    continue
                if ev.finish:
                    del self._routes[ev.rid]
                by_loop[route[0]].append((route[1], ev))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_deliver, items)

    def _fail_all(self, err: Exception) -> None:
        with self._lock:
            routes, self._routes = self._routes, {}
        for rid in routes:
            self.decoder.cancel(rid)
        try:
            self.decoder.step()  # drops the cancelled rows
        except Exception:
            log.exception("could not reset the decoder")
        for loop, q in routes.values():
            loop.call_soon_threadsafe(q.put_nowait, err)


def _deliver(items: list[tuple[asyncio.Queue, Event]]) -> None:
    for q, ev in items:
        q.put_nowait(ev)
