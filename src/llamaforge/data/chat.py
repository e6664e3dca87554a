"""Chat data for alignment: SFT dialogues (with packing) and preference pairs, validated with file:line.

SFT (Llama 2 3.1): every answer's tokens are trained on, every prompt token is masked out. Three
packings: `none` (one sample per row, padded), `concat` (the paper's: samples concatenated and cut
into seq_len windows), `isolated` (samples packed whole into windows, each attending only to
itself, positions restarting: block-diagonal causal attention; the default).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llamaforge.errors import UserError
from llamaforge.tokenizer import Tokenizer, validate_dialog

IGNORE = -100  # label of a position that does not count in the loss
RATINGS = ("significantly_better", "better", "slightly_better", "negligibly_better")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line; a malformed line is an error naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{n}: invalid UTF-8 at byte {e.start}") from None
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            yield n, rec


def record_messages(rec: dict, where: str) -> list[dict]:
    """`{"messages": [...]}` or `{"prompt", "response", "system"?}` as a validated message list."""
    if "messages" in rec:
        return validate_dialog(rec["messages"], where)
    if "prompt" in rec and "response" in rec:
        msgs = []
        if rec.get("system"):
            msgs.append({"role": "system", "content": rec["system"]})
        msgs += [{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": rec["response"]}]
        return validate_dialog(msgs, where)
    raise UserError(f"{where}: a record needs 'messages' or 'prompt' and 'response' (has {sorted(rec)})")


@dataclass
class EncodeStats:
    samples: int = 0
    truncated: int = 0
    dropped: int = 0
    no_answer: int = 0
    tokens: int = 0
    answer_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def encode_sft_file(path: str | Path, tok: Tokenizer, seq_len: int, overlong: str = "truncate",
                    stats: EncodeStats | None = None) -> list[tuple[list[int], list[int]]]:
    """Encode every dialogue of a JSONL file to (ids, mask), applying the over-long policy.

    A sample longer than seq_len + 1 tokens is cut (`truncate`), skipped (`drop`) or an error.
    Samples with no trained token left (all answers masked or cut away) are dropped and counted.
    """
    if overlong not in ("truncate", "drop", "error"):
        raise UserError(f"data.overlong must be truncate, drop or error, not {overlong!r}")
    stats = stats if stats is not None else EncodeStats()
    out = []
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        msgs = record_messages(rec, where)
        if msgs[-1]["role"] != "assistant":
            raise UserError(f"{where}: the last message must be the assistant's answer to train on")
        ids, mask = tok.encode_dialog(msgs, where)
        if len(ids) > seq_len + 1:
            if overlong == "error":
                raise UserError(f"{where}: {len(ids)} tokens exceed train.seq_len + 1 = {seq_len + 1}; "
                                "raise seq_len or set data.overlong to truncate or drop")
            if overlong == "drop":
                stats.dropped += 1
                continue
            ids, mask = ids[: seq_len + 1], mask[: seq_len + 1]
            stats.truncated += 1
        if sum(mask[1:]) == 0:
            stats.no_answer += 1
            continue
        stats.samples += 1
        stats.tokens += len(ids)
        stats.answer_tokens += sum(mask)
        out.append((ids, mask))
    return out


def _inputs_labels(ids: list[int], mask: list[int]) -> tuple[list[int], list[int]]:
    """Next-token inputs and labels; a label counts only where the predicted token is trained on."""
    return ids[:-1], [t if m else IGNORE for t, m in zip(ids[1:], mask[1:])]


def pack(samples: list[tuple[list[int], list[int]]], seq_len: int, mode: str, pad_id: int = 0
         ) -> list[dict[str, list[int]]]:
    """Pack encoded samples into rows of exactly seq_len inputs: tokens, labels, positions, doc ids."""
    rows: list[dict[str, list[int]]] = []
    if mode == "none":
        for ids, mask in samples:
            x, y = _inputs_labels(ids, mask)
            pad = seq_len - len(x)
            rows.append({"tokens": x + [pad_id] * pad, "labels": y + [IGNORE] * pad,
                         "positions": list(range(seq_len)), "docs": [0] * len(x) + [-1] * pad})
    elif mode == "concat":
        stream_ids, stream_mask = [], []
        for ids, mask in samples:
            stream_ids += ids
            stream_mask += mask
        for s in range(0, max(len(stream_ids) - 1, 0), seq_len):
            x, y = _inputs_labels(stream_ids[s: s + seq_len + 1], stream_mask[s: s + seq_len + 1])
            pad = seq_len - len(x)
            rows.append({"tokens": x + [pad_id] * pad, "labels": y + [IGNORE] * pad,
                         "positions": list(range(seq_len)), "docs": [0] * len(x) + [-1] * pad})
    elif mode == "isolated":
        # First-fit-decreasing bins of whole samples; each keeps its own positions and document id.
        order = sorted(range(len(samples)), key=lambda i: -len(samples[i][0]))
        bins: list[list[int]] = []
        room: list[int] = []
        for i in order:
            n = len(samples[i][0]) - 1
            for b, r in enumerate(room):
                if r >= n:
                    bins[b].append(i)
                    room[b] -= n
                    break
            else:
                bins.append([i])
                room.append(seq_len - n)
        for b in sorted(bins, key=min):  # a stable order independent of the length sort
            row: dict[str, list[int]] = {"tokens": [], "labels": [], "positions": [], "docs": []}
            for d, i in enumerate(sorted(b)):
                x, y = _inputs_labels(*samples[i])
                row["tokens"] += x
                row["labels"] += y
                row["positions"] += list(range(len(x)))
                row["docs"] += [d] * len(x)
            pad = seq_len - len(row["tokens"])
            row["tokens"] += [pad_id] * pad
            row["labels"] += [IGNORE] * pad
            row["positions"] += list(range(pad))
            row["docs"] += [-1] * pad  # padding attends only to padding
            rows.append(row)
    else:
        raise UserError(f"data.packing must be none, concat or isolated, not {mode!r}")
    return rows


def packing_efficiency(rows: list[dict[str, list[int]]]) -> float:
    """Share of row positions that hold real (non-padding) inputs; padding has document id -1."""
    total = sum(len(r["docs"]) for r in rows)
    return sum(sum(1 for d in r["docs"] if d >= 0) for r in rows) / max(total, 1)


@functools.lru_cache(maxsize=8)
def seeded_permutation(n: int, seed: int) -> tuple[int, ...]:
    """range(n) shuffled by random.Random(seed); cached, so serving an epoch costs one shuffle."""
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    return tuple(perm)


def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([r[k] for r in rows], dtype=torch.long) for k in rows[0]}


@dataclass
class EpochBatches:
    """Rows served for a number of epochs in a seeded shuffled order; exact position in state_dict.

    Each call returns this rank's micro-batch of `micro` rows; together the `world_size` ranks take
    `micro * world_size` consecutive rows of the global order (rank r the r-th slice). The position
    is global (rows served across all ranks), so a resumed run, even on another number of
    data-parallel ranks, continues with the next unseen row. `limit` caps the rows served (a whole
    number of optimizer steps, so the data never runs out in the middle of one).
    """

    rows: list[dict[str, list[int]]]
    micro: int
    epochs: float = 1.0
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    limit: int | None = None
    position: int = 0  # global rows served

    @property
    def total(self) -> int:
        n = int(len(self.rows) * self.epochs)
        return n if self.limit is None else min(n, self.limit)

    def _row(self, g: int) -> dict[str, list[int]]:
        epoch, i = divmod(g, len(self.rows))
        return self.rows[seeded_permutation(len(self.rows), self.seed * 1_000_003 + epoch)[i]]

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        step_rows = self.micro * self.world_size
        if self.position + step_rows > self.total:
            raise StopIteration(f"data exhausted after {self.position / max(len(self.rows), 1):.2f} epochs")
        start = self.position + self.rank * self.micro
        batch = [self._row(g) for g in range(start, start + self.micro)]
        self.position += step_rows
        return collate(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "n_rows": len(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("n_rows", len(self.rows)) != len(self.rows):
            raise UserError(f"the data changed since the checkpoint ({state['n_rows']} rows then, "
                            f"{len(self.rows)} now); resume with the same data or start a new run")
        self.position, self.seed = int(state["position"]), int(state["seed"])


# -- preference pairs ---------------------------------------------------------------------------
@dataclass
class PrefPair:
    messages: list[dict]  # the prompt as a dialogue ending with a user message
    chosen: str
    rejected: str
    rating: str
    margin: float | None = None
    safety: bool | None = None
    where: str = ""


def load_pref_pairs(path: str | Path) -> list[PrefPair]:
    """Preference records (`prompt` or `messages`, chosen, rejected, rating, margin?, safety?)."""
    out = []
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        for k in ("chosen", "rejected"):
            if not isinstance(rec.get(k), str) or not rec[k].strip():
                raise UserError(f"{where}: field {k!r} must be a non-empty string")
        rating = rec.get("rating", "better")
        if rating not in RATINGS:
            raise UserError(f"{where}: rating {rating!r} is not one of {', '.join(RATINGS)}")
        if "messages" in rec:
            msgs = validate_dialog(rec["messages"], where)
        elif isinstance(rec.get("prompt"), str) and rec["prompt"].strip():
            msgs = [{"role": "user", "content": rec["prompt"]}]
        else:
            raise UserError(f"{where}: a preference record needs 'prompt' (non-empty string) or 'messages'")
        if msgs[-1]["role"] != "user":
            raise UserError(f"{where}: 'messages' must end with the user turn being answered")
        margin = rec.get("margin")
        if margin is not None and not isinstance(margin, (int, float)):
            raise UserError(f"{where}: field 'margin' must be a number")
        safety = rec.get("safety")
        if safety is not None and not isinstance(safety, bool):
            raise UserError(f"{where}: field 'safety' must be true or false")
        out.append(PrefPair(msgs, rec["chosen"], rec["rejected"], rating, margin, safety, where))
    return out
