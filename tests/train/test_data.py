"""Token shards, `data tokenize` and the single-pass mixture loader."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import numpy as np
import pytest

from llamaforge.data.loader import Permutation, PretrainLoader, Source, ValBatches
from llamaforge.data.shards import ShardWriter, TokenShards
from llamaforge.data.tokenize import main as tokenize_main
from llamaforge.data.tokenize import tokenize_files
from llamaforge.errors import UserError


def test_tokenize_roundtrip_and_split(shards, tokenizer, corpus_jsonl):
    train, val = TokenShards(shards / "train"), TokenShards(shards / "val")
    assert train.dtype == np.uint16 and train.vocab_size == tokenizer.n_words
    toks = train.read(0, len(train))
    assert toks[0] == tokenizer.bos_id
    # Every document is <s> ... </s>: as many bos as eos, and the stream ends with eos.
    assert (toks == tokenizer.bos_id).sum() == (toks == tokenizer.eos_id).sum() == train.index["docs"]
    assert toks[-1] == tokenizer.eos_id
    n_docs = sum(1 for _ in corpus_jsonl.open())
    assert train.index["docs"] + val.index["docs"] == n_docs and val.index["docs"] >= 1
    first = json.loads(corpus_jsonl.open().readline())["text"]
    end = int(np.argmax(toks == tokenizer.eos_id))
    assert tokenizer.decode(toks[1:end]) == first or val.index["docs"]  # first doc may be held out
    man = json.loads((shards / "manifest.json").read_text())
    assert man["stats"]["train_tokens"] == len(train) and (shards / "tokenizer.model").is_file()


def test_tokenize_workers_give_same_output(tmp_path, corpus_jsonl, tokenizer_path, shards):
    out = tmp_path / "w2"
    tokenize_files([corpus_jsonl], tokenizer_path, out, workers=2, val_fraction=0.1, progress=False,
                   shard_tokens=50_000)
    a, b = TokenShards(shards / "train"), TokenShards(out / "train")
    assert len(b.index["shards"]) > 1  # rolled over
    assert np.array_equal(a.read(0, len(a)), b.read(0, len(b)))


def test_tokenize_txt_blocks_and_gz(tmp_path, tokenizer_path, tokenizer):
    (tmp_path / "a.txt").write_text("first block\n\nsecond block\nstill second\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"body": "gz doc"}) + "\n")
    out = tmp_path / "out"
    assert tokenize_main([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl.gz"), "--tokenizer", str(tokenizer_path),
                          "--out", str(out), "--txt-mode", "blocks", "--text-field", "body", "--val-fraction", "0",
                          "--no-progress"]) == 0
    toks = TokenShards(out / "train").read(0, len(TokenShards(out / "train")))
    pieces = np.split(toks, np.where(toks == tokenizer.eos_id)[0] + 1)[:-1]
    assert [tokenizer.decode(p[1:-1]) for p in pieces] == ["first block\n", "second block\nstill second\n", "gz doc"]


def test_malformed_json_names_file_line_and_skip_bad(tmp_path, tokenizer_path):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": broken\n{"text": "fine"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: malformed JSON.*--skip-bad"):
        tokenize_files([f], tokenizer_path, tmp_path / "o1", progress=False)
    assert not (tmp_path / "o1").exists()  # nothing half-written
    stats = tokenize_files([f], tokenizer_path, tmp_path / "o2", skip_bad=True, val_fraction=0, progress=False)
    assert stats["bad_records"]["count"] == 2 and stats["train_docs"] == 2
    reasons = {e["line"]: e["reason"] for e in stats["bad_records"]["examples"]}
    assert "malformed JSON" in reasons[2] and "invalid UTF-8" in reasons[4]
    man = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert man["stats"]["bad_records"]["count"] == 2


def test_uint32_when_vocab_large(tmp_path):
    w = ShardWriter(tmp_path, vocab_size=70_000, eos_id=2)
    w.add_document([1, 69_999, 2])
    w.close()
    s = TokenShards(tmp_path)
    assert s.dtype == np.uint32 and list(s.read(0, 3)) == [1, 69_999, 2]


def test_permutation_is_a_bijection():
    for n in (1, 2, 7, 1000, 1023, 1025):
        p = Permutation(n, seed=3)
        assert sorted(p(i) for i in range(n)) == list(range(n))
    assert [Permutation(1000, 1)(i) for i in range(10)] != [Permutation(1000, 2)(i) for i in range(10)]


def _make_source(tmp_path, name, n_tokens, vocab=1000):
    w = ShardWriter(tmp_path / name, vocab_size=vocab, eos_id=2, shard_tokens=997)
    w.add_tokens(np.arange(n_tokens) % vocab, 1)
    w.close()
    return str(tmp_path / name)


def _drain(loader, limit=10_000):
    out = []
    for _ in range(limit):
        try:
            out.extend(next(loader)["ids"])
        except StopIteration:
            break
    return out


def test_single_pass_epochs_and_exhaustion(tmp_path):
    a = _make_source(tmp_path, "a", 16 * 40 + 1)  # 40 windows of seq 16
    b = _make_source(tmp_path, "b", 16 * 10 + 1)  # 10 windows
    ld = PretrainLoader([Source(a, 1.0, 1.0), Source(b, 3.0, 2.5)], seq_len=16, batch_size=5, micro=5)
    ids = _drain(ld)
    c = Counter(ids)
    assert sum(1 for s, _ in ids if s == 0) == 40 and max(n for (s, _), n in c.items() if s == 0) == 1
    assert sum(1 for s, _ in ids if s == 1) == 25  # 2.5 epochs of 10 windows
    assert max(n for (s, _), n in c.items() if s == 1) == 3
    assert len(ids) == 65 and "max epochs" in ld.exhausted_reason
    # Windows are contiguous seq_len + 1 tokens at stride seq_len.
    ld2 = PretrainLoader([Source(a)], seq_len=16, batch_size=2, micro=2)
    t = next(ld2)["tokens"]
    assert t.shape == (2, 17) and (t[:, 1:] - t[:, :-1] == 1).all()


def test_mixture_weights(tmp_path):
    a = _make_source(tmp_path, "a", 8 * 3000 + 1)
    b = _make_source(tmp_path, "b", 8 * 3000 + 1)
    ld = PretrainLoader([Source(a, 1.0), Source(b, 3.0)], seq_len=8, batch_size=100, micro=100)
    ids = [s for _ in range(20) for s, _ in next(ld)["ids"]]
    assert 0.2 < ids.count(0) / len(ids) < 0.3


def test_resume_exact_and_ranks_disjoint(tmp_path):
    a = _make_source(tmp_path, "a", 8 * 500 + 1)
    b = _make_source(tmp_path, "b", 8 * 300 + 1)
    srcs = [Source(a, 1.0), Source(b, 1.0)]
    full = PretrainLoader(srcs, seq_len=8, batch_size=8, micro=2)
    ref = [next(full)["ids"] for _ in range(20)]  # 5 steps of 4 micro-batches
    first = PretrainLoader(srcs, seq_len=8, batch_size=8, micro=2)
    got = [next(first)["ids"] for _ in range(9)]  # stop in the middle of step 3
    resumed = PretrainLoader(srcs, seq_len=8, batch_size=8, micro=2)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got += [next(resumed)["ids"] for _ in range(11)]
    assert got == ref
    # Two ranks after a step-boundary resume: disjoint halves of the same global batches.
    st = PretrainLoader(srcs, seq_len=8, batch_size=8, micro=2)
    for _ in range(8):
        next(st)
    ranks = []
    for r in range(2):
        ld = PretrainLoader(srcs, seq_len=8, batch_size=8, micro=2, rank=r, world=2)
        ld.load_state_dict(st.state_dict())
        ranks.append([i for _ in range(6) for i in next(ld)["ids"]])
    flat_ref = [i for m in ref[8:20] for i in m]
    assert sorted(ranks[0] + ranks[1]) == sorted(flat_ref) and not set(ranks[0]) & set(ranks[1])


def test_val_batches_split_by_rank(shards):
    v = ValBatches(shards / "val", seq_len=32, micro=4, max_windows=16)
    v0, v1 = (ValBatches(shards / "val", 32, 4, 16, rank=r, world=2) for r in range(2))
    assert len(v) == 16 and sum(b["tokens"].shape[0] for b in v0) == sum(b["tokens"].shape[0] for b in v1) == 8


def test_loader_errors(tmp_path):
    a = _make_source(tmp_path, "a", 20)
    with pytest.raises(UserError, match="less than one window"):
        PretrainLoader([Source(a)], seq_len=32, batch_size=2, micro=2)
    with pytest.raises(UserError, match="multiple of"):
        PretrainLoader([Source(a)], seq_len=4, batch_size=3, micro=2)
    with pytest.raises(UserError, match="not a token shard directory"):
        TokenShards(tmp_path)


def test_tokenize_parquet(tmp_path, tokenizer_path, tokenizer):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"text": ["alpha beta", "gamma"], "id": [1, 2]}), tmp_path / "d.parquet")
    stats = tokenize_files([tmp_path / "d.parquet"], tokenizer_path, tmp_path / "o", val_fraction=0,
                           progress=False)
    toks = TokenShards(tmp_path / "o" / "train").read(0, stats["train_tokens"])
    docs = np.split(toks, np.where(toks == tokenizer.eos_id)[0] + 1)[:-1]
    assert stats["train_docs"] == 2 and [tokenizer.decode(d[1:-1]) for d in docs] == ["alpha beta", "gamma"]
