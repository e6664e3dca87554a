"""SFT data: loss masks on real chat encodings, the three packings, isolation, resumable epochs."""

import json

import pytest
import torch

from llamaforge.data.chat import (
    IGNORE,
    EpochBatches,
    collate,
    encode_sft_file,
    load_pref_pairs,
    pack,
    packing_efficiency,
)
from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.model.llama import Transformer, causal_block_mask


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def sft_file(tmp_path):
    recs = [{"messages": [{"role": "user", "content": f"add {i} and {i + 2}"},
                          {"role": "assistant", "content": f"{i} + {i + 2} is {2 * i + 2}."}]} for i in range(12)]
    recs.append({"prompt": "Say hi", "response": "Hi!", "system": "Be cheerful."})
    recs.append({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                              {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]})
    return _write(tmp_path / "sft.jsonl", recs)


def test_labels_only_on_answer_tokens(tokenizer, sft_file):
    samples = encode_sft_file(sft_file, tokenizer, 128)
    ids, mask = samples[0]
    rows = pack([samples[0]], 128, "none")
    labels = [x for x in rows[0]["labels"] if x != IGNORE]
    answer = tokenizer.encode("0 + 2 is 2. ", bos=False, eos=True)
    assert labels == answer  # exactly the answer and its eos, nothing of the prompt
    assert rows[0]["tokens"][: len(ids) - 1] == ids[:-1]


def test_multi_turn_trains_every_answer(tokenizer, sft_file):
    samples = encode_sft_file(sft_file, tokenizer, 128)
    labels = [x for x in pack([samples[-1]], 128, "none")[0]["labels"] if x != IGNORE]
    assert labels == tokenizer.encode("b ", bos=False, eos=True) + tokenizer.encode("d ", bos=False, eos=True)


@pytest.mark.parametrize("mode", ["none", "concat", "isolated"])
def test_packings_keep_every_trained_label(tokenizer, sft_file, mode):
    samples = encode_sft_file(sft_file, tokenizer, 64)
    rows = pack(samples, 64, mode)
    assert all(len(r["tokens"]) == 64 == len(r["labels"]) == len(r["positions"]) for r in rows)
    want = sorted(t for ids, m in samples for t, mm in zip(ids[1:], m[1:]) if mm)
    got = sorted(x for r in rows for x in r["labels"] if x != IGNORE)
    if mode == "concat":  # window boundaries lose the first label of each window at most
        assert len(want) - len(rows) <= len(got) <= len(want)
    else:
        assert got == want
    eff = packing_efficiency(rows)
    assert 0 < eff <= 1
    if mode == "none":
        assert eff < packing_efficiency(pack(samples, 64, "isolated"))


def test_isolated_packing_equals_samples_alone(tokenizer, sft_file):
    torch.manual_seed(0)
    m = Transformer(ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tokenizer.n_words,
                              multiple_of=16, max_seq_len=128)).eval()
    m.init_weights()
    samples = encode_sft_file(sft_file, tokenizer, 64)[:6]
    rows = pack(samples, 64, "isolated")
    b = collate(rows)
    with torch.no_grad():
        packed = m(b["tokens"], input_pos=b["positions"], mask=causal_block_mask(b["docs"]))
        checked = 0
        for r, row in enumerate(rows):
            for d in sorted(set(row["docs"]) - {-1}):
                idx = [i for i, x in enumerate(row["docs"]) if x == d]
                alone = m(b["tokens"][r, idx].unsqueeze(0))[0]
                torch.testing.assert_close(packed[r, idx], alone, atol=1e-5, rtol=0)
                checked += 1
    assert checked == 6


def test_overlong_policies(tokenizer, tmp_path):
    f = _write(tmp_path / "long.jsonl", [{"prompt": "short", "response": "x " * 200}, {"prompt": "a", "response": "b"}])
    from llamaforge.data.chat import EncodeStats

    st = EncodeStats()
    assert len(encode_sft_file(f, tokenizer, 32, "drop", st)) == 1 and st.dropped == 1
    st = EncodeStats()
    out = encode_sft_file(f, tokenizer, 32, "truncate", st)
    assert st.truncated == 1 and len(out[0][0]) == 33
    with pytest.raises(UserError, match=r"long.jsonl:1: .*exceed"):
        encode_sft_file(f, tokenizer, 32, "error")


@pytest.mark.parametrize("line,match", [
    ("{not json", r"bad.jsonl:2: malformed JSON"),
    ('{"messages": [{"role": "assistant", "content": "x"}]}', r"bad.jsonl:2: message 0 .*'user' was expected"),
    ('{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]}', "empty content"),
    ('{"text": "x"}', r"bad.jsonl:2: a record needs 'messages'"),
    ('{"messages": [{"role": "user", "content": "q"}]}', "last message must be the assistant"),
])
def test_bad_records_name_file_and_line(tokenizer, tmp_path, line, match):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "response": "b"}\n' + line + "\n")
    with pytest.raises(UserError, match=match):
        encode_sft_file(f, tokenizer, 64)


def test_epoch_batches_resume_exactly_and_reshard():
    rows = [{"tokens": [i], "labels": [i], "positions": [0], "docs": [0]} for i in range(10)]
    full = [b["tokens"].flatten().tolist() for b in EpochBatches(rows, micro=2, epochs=2, seed=3)]
    assert len(full) == 10
    assert sorted(sum(full[:5], [])) == list(range(10))  # each epoch serves each row once
    assert sorted(sum(full[5:], [])) == list(range(10)) and full[:5] != full[5:]
    a = EpochBatches(rows, micro=2, epochs=2, seed=3)
    first = [next(a)["tokens"].flatten().tolist() for _ in range(3)]
    b = EpochBatches(rows, micro=2, epochs=2, seed=0)
    b.load_state_dict(a.state_dict())
    assert first + [x["tokens"].flatten().tolist() for x in b] == full
    # Two ranks split each global micro-step; together they serve the same rows, resumable on one.
    r0 = EpochBatches(rows, micro=1, epochs=2, seed=3, rank=0, world_size=2)
    r1 = EpochBatches(rows, micro=1, epochs=2, seed=3, rank=1, world_size=2)
    both = [next(r0)["tokens"].flatten().tolist() + next(r1)["tokens"].flatten().tolist() for _ in range(10)]
    assert both == full
    assert len(list(EpochBatches(rows, micro=2, epochs=2, limit=6))) == 3
    with pytest.raises(UserError, match="data changed"):
        EpochBatches(rows[:5], micro=2).load_state_dict(a.state_dict())


def test_pref_pairs_validation(tmp_path):
    f = _write(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "rating": "better"},
                                      {"messages": [{"role": "system", "content": "s"},
                                                    {"role": "user", "content": "q"}],
                                       "chosen": "a", "rejected": "b", "rating": "slightly_better", "safety": True}])
    pairs = load_pref_pairs(f)
    assert [p.rating for p in pairs] == ["better", "slightly_better"] and pairs[1].safety is True
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b", "rating": "much_better"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: rating 'much_better'"):
        load_pref_pairs(bad)
    bad.write_text('{"prompt": "q", "chosen": "", "rejected": "b"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: field 'chosen'"):
        load_pref_pairs(bad)
