"""Ghost Attention: example construction, synthesis from a model, and the retention evaluation."""

import json

from llamaforge.align.gatt import build_example
from llamaforge.data.chat import IGNORE, encode_sft_file, pack


def _dialogue(n):
    msgs = []
    for i in range(n):
        msgs += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    return msgs


def test_instruction_only_first_and_loss_only_last_turn(tokenizer, tmp_path):
    ex = build_example(_dialogue(4), "Always answer as Napoleon.", cut=3)
    assert ex[0] == {"role": "system", "content": "Always answer as Napoleon."}
    assert [m["role"] for m in ex[1:]] == ["user", "assistant"] * 3
    assert [m.get("train", True) for m in ex if m["role"] == "assistant"] == [False, False, True]
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"messages": ex}) + "\n")
    samples = encode_sft_file(f, tokenizer, 256)
    labels = [x for x in pack(samples, 256, "none")[0]["labels"] if x != IGNORE]
    assert labels == tokenizer.encode("answer 2 ", bos=False, eos=True)
    text = tokenizer.decode(samples[0][0])
    assert text.count("Napoleon") == 1 and text.index("Napoleon") < text.index("question 0")


def test_synthesize_cli_writes_sft_data(tmp_path, tiny_checkpoint, world_dir, tokenizer):
    from llamaforge.cli import main

    out = tmp_path / "gatt.jsonl"
    rc = main(["gatt", "synthesize", "--model", str(tiny_checkpoint), "--dialogues", str(world_dir / "dialogues.jsonl"),
               "--out", str(out), "--limit", "3", "--tries", "1", "--max-new-tokens", "6"])
    assert rc == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 3
    from llamaforge.align.world import check_instruction, trained_types

    for r in recs:
        msgs = r["messages"]
        ins = msgs[0]["content"]
        assert msgs[0]["role"] == "system" and r["instruction"]["type"] in trained_types()
        assert all(ins not in m["content"] for m in msgs[1:] if m["role"] == "user")
        trained = [m for m in msgs if m["role"] == "assistant" and m.get("train", True)]
        assert len(trained) == 1 and trained[0] is msgs[-1]
        # A random model cannot obey; the world's canonical answer stands in, and it obeys.
        assert check_instruction(r["instruction"], msgs[-1]["content"])
    assert len(encode_sft_file(out, tokenizer, 512)) == 3


def test_eval_gatt_report(tmp_path, tiny_checkpoint):
    from llamaforge.cli import main

    rc = main(["eval", "gatt", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "r"), "--turns", "2",
               "--conversations", "2", "--max-new-tokens", "4"])
    assert rc == 0
    res = json.loads((tmp_path / "r" / "gatt.json").read_text())
    assert set(res["retention"]) == {"trained", "held_out"}
    assert all(len(v) == 2 and all(0 <= x <= 1 for x in v) for v in res["retention"].values())
    assert (tmp_path / "r" / "gatt.png").stat().st_size > 1000
    assert (tmp_path / "r" / "gatt.md").read_text().startswith("| turn |")
