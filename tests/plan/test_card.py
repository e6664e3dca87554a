"""`llamaforge card`: the lineage is followed through real manifests; compute and evaluations are summed and shown."""

from __future__ import annotations

import json
import shutil

import pytest

from llamaforge.carbon import run_record
from llamaforge.card import build_card, lineage, main, to_markdown
from llamaforge.errors import UserError
from llamaforge.io import write_manifest


@pytest.fixture()
def chain(tmp_path, tiny_checkpoint):
    """corpus -> shards -> pretrain run (final/) -> sft run (final/), with compute records on the two runs."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "docs.jsonl").write_text('{"text": "hello"}\n')
    write_manifest(corpus, "demo corpus", None, [], docs=1)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_manifest(shards, "data tokenize", None, [corpus / "docs.jsonl"],
                   stats={"docs": 1, "train_tokens": 1234, "val_tokens": 56})
    runs = {}
    for name, inp, hours in (("pretrain", shards / "train", 0.5), ("sft", None, 0.25)):
        run = tmp_path / name
        shutil.copytree(tiny_checkpoint, run / "final")
        inputs = [inp] if inp else [runs["pretrain"] / "final", corpus / "docs.jsonl"]
        write_manifest(run, name, None, inputs, 10.0, summary={"steps": 7, "tokens_seen": 700, "val_loss": 2.5},
                       compute=run_record(hours * 3600, device="a100", count=1))
        runs[name] = run
    (shards / "train").mkdir()
    (runs["sft"] / "result.json").write_text(json.dumps({"skill_accuracy": 0.25, "unsafe_compliance": 0.1,
                                                          "false_refusal": 0.05}))
    return tmp_path, runs


def test_lineage_follows_inputs_once(chain):
    _, runs = chain
    cmds = [e["manifest"]["command"] for e in lineage(runs["sft"] / "final")]
    assert cmds[0] == "sft"
    # the corpus is reached twice (from sft and from the shards) and listed once
    assert sorted(cmds) == sorted(["sft", "pretrain", "demo corpus", "data tokenize"])


def test_card_sums_compute_and_shows_results(chain, tmp_path):
    root, runs = chain
    ev = root / "safety"
    ev.mkdir()
    (ev / "report.md").write_text("| benchmark | score |\n|---|---|\n| toxigen | 0.123 |\n")
    write_manifest(ev, "eval safety", None, [])
    card = build_card(runs["sft"] / "final", [str(ev)])
    assert card["model"]["params"] > 0 and card["model"]["tokenizer"]
    assert card["compute_total"]["device_hours"] == pytest.approx(0.75)
    # 0.75 GPU-hours at 400 W, PUE 1.1, 0.385 kg/kWh
    assert card["compute_total"]["kg_co2eq"] == pytest.approx(0.75 * 0.4 * 1.1 * 0.385)
    md = to_markdown(card)
    assert "train_tokens 1,234" in md and "toxigen | 0.123" in md and "25.0%" in md
    assert "## Intended use" in md and "RESPONSIBLE_USE.md" in md
    assert md.index("| 0 | sft |") < md.index("| pretrain |")
    out = tmp_path / "card" / "CARD.md"
    assert main(["--model", str(runs["sft"] / "final"), "--out", str(out), "--eval", str(ev)]) == 0
    assert out.read_text().startswith("# Model card: sft")
    assert json.loads(out.with_suffix(".json").read_text())["compute_total"]["device_hours"] == pytest.approx(0.75)


def test_self_referencing_manifest_terminates(tmp_path, tiny_checkpoint):
    run = tmp_path / "loop"
    shutil.copytree(tiny_checkpoint, run / "final")
    write_manifest(run, "sft", None, [run / "final", run])
    assert [e["manifest"]["command"] for e in lineage(run / "final")] == ["sft"]


def test_card_errors_name_the_path(tmp_path, tiny_checkpoint):
    with pytest.raises(UserError, match="not a checkpoint directory"):
        build_card(tmp_path / "missing")
    with pytest.raises(UserError, match="--eval .*nope"):
        build_card(tiny_checkpoint, [str(tmp_path / "nope")])
    card = build_card(tiny_checkpoint)  # no manifest: still a card, saying so
    assert card["lineage"] == [] and "no manifest found" in to_markdown(card)
