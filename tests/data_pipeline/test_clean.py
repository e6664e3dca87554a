"""`data clean` end to end on a planted corpus: every planted item handled as configured, nothing
clean lost, manifest counts that match the shards, file:line errors, resume and restart."""

from __future__ import annotations

import json

import pytest
from dp_helpers import make_config, read_shards

from llamaforge.data.clean import stages
from llamaforge.data.clean.config import NormalizeConfig
from llamaforge.data.clean.normalize import normalize_text
from llamaforge.data.clean.pipeline import clean
from llamaforge.data.clean.synth import BOILERPLATE, planted_corpus, write_jsonl
from llamaforge.errors import UserError

DROPPED = ("exact_dup", "near_dup", "foreign", "blocked", "pii_dense", "junk_symbols", "junk_repeated")


def test_planted_items_removed_and_clean_kept_intact(planted, cleaned):
    recs, kinds, _, _ = planted
    manifest, out, _ = cleaned
    by_id = {r["id"]: r for r in out}
    src = {r["id"]: r for r in recs}
    for kind in DROPPED:
        assert not set(kinds[kind]) & set(by_id), f"planted {kind} survived"
    norm = NormalizeConfig()
    for i in kinds["clean"]:  # nothing clean is lost, and its text is only normalized
        assert by_id[i]["text"] == normalize_text(src[i]["text"], norm)
        assert by_id[i]["url"] == src[i]["url"]  # other fields carried through
    for i in kinds["boilerplate"]:  # the boilerplate line went, the rest stayed
        want = normalize_text(src[i]["text"].replace("\n" + BOILERPLATE, ""), norm)
        assert by_id[i]["text"] == want and by_id[i]["annotations"]["boilerplate_lines"] == 1
    for i in kinds["toxic"]:  # default: annotate only, as Llama 2
        ann = by_id[i]["annotations"]
        assert ann["toxicity"] >= 0.5 and "toxicity" in ann["flags"]
    for i in kinds["pii_light"]:
        t = by_id[i]["text"]
        assert "<EMAIL>" in t and "<PHONE>" in t and "@example.com" not in t
        assert by_id[i]["annotations"]["pii"] == {"email": 1, "phone": 1}
    assert all(r["annotations"]["language"] == "en" for r in out)


def test_manifest_counts_match(planted, cleaned):
    recs, kinds, path, bad_line = planted
    manifest, out, out_dir = cleaned
    s = manifest["steps"]
    assert s["read"]["records"] == len(recs) + 1 and s["read"]["bad"] == 1
    assert s["dedup"]["dropped"] == len(kinds["exact_dup"]) == s["dedup"]["exact_duplicates"]
    assert s["dedup"]["boilerplate"]["lines_removed"] == len(kinds["boilerplate"])
    assert s["neardup"]["dropped"] == len(kinds["near_dup"]) == s["neardup"]["clusters"]["duplicates"]
    # symbol soup has no language (langid finds no features): language drops it before quality
    assert s["language"]["dropped"] == len(kinds["foreign"]) + 1 and s["language"]["languages"]["unknown"] == 1
    assert s["quality"]["dropped"] == 1 and s["quality"]["rules"]["max_dup_line_fraction"]["dropped"] == 1
    assert s["toxicity"]["dropped"] == 0 and s["toxicity"]["flagged"] == len(kinds["toxic"])
    assert s["privacy"]["dropped_blocklist"] == len(kinds["blocked"])
    assert s["privacy"]["dropped_pii_dense"] == len(kinds["pii_dense"])
    # PII found: 1 + 1 in each light document, 25 + 25 in each dense one (dropped after counting)
    assert s["privacy"]["pii"] == {"email": 3 + 75, "phone": 3 + 75} and s["privacy"]["docs_with_pii"] == 6
    assert s["writer"]["docs"] == len(out) == manifest["totals"]["docs_out"]
    assert sum(x["docs"] for x in manifest["shards"]) == len(out)
    for step in ("dedup", "neardup", "language", "quality", "toxicity"):  # a funnel: each step feeds the next
        nxt = {"dedup": "neardup", "neardup": "language", "language": "quality", "quality": "toxicity",
               "toxicity": "privacy"}[step]
        assert s[step]["out"] == s[nxt]["in"]
    assert s["privacy"]["out"] == len(out)
    ex = manifest["bad_records"]["examples"]
    assert ex == [{"file": str(path), "line": bad_line, "reason": ex[0]["reason"]}]
    assert ex[0]["reason"].startswith("malformed JSON")
    assert manifest["memory"]["neardup_index_bytes"] > 0
    assert manifest["inputs"][0]["sha256"] and manifest["config"]["neardup"]["threshold"] == 0.8
    on_disk = json.loads((out_dir / "manifest.json").read_text())
    assert on_disk["steps"] == json.loads(json.dumps(s))
    assert not (out_dir / ".progress.json").exists() and not (out_dir / ".work").exists()


def test_malformed_line_stops_with_file_and_line(planted, tmp_path):
    _, _, path, bad_line = planted
    with pytest.raises(UserError, match=rf"{path}:{bad_line}: malformed JSON.*--skip-bad"):
        clean([str(path)], tmp_path / "out", make_config(), workers=1, progress=False)
    assert not list((tmp_path / "out").glob("shard-*"))


def test_toxicity_drop_and_annotate_everything(planted, tmp_path):
    recs, kinds, path, _ = planted
    m = clean([str(path)], tmp_path / "a", make_config("--read.skip_bad=true", "--toxicity.action=drop"),
              workers=1, progress=False)
    ids = {r["id"] for r in read_shards(tmp_path / "a")}
    assert not set(kinds["toxic"]) & ids and m["steps"]["toxicity"]["dropped"] == len(kinds["toxic"])
    ov = [f"--{s}.action=annotate" for s in ("dedup", "neardup", "language", "quality", "privacy")]
    m = clean([str(path)], tmp_path / "b", make_config("--read.skip_bad=true", *ov), workers=1, progress=False)
    out = {r["id"]: r for r in read_shards(tmp_path / "b")}
    assert len(out) == len(recs)  # nothing dropped, everything planted is flagged
    for kind in DROPPED:
        for i in kinds[kind]:
            assert out[i]["annotations"].get("flags"), (kind, i)
    assert not any(out[i]["annotations"].get("flags") for i in kinds["clean"])


def _small_corpus(tmp_path):
    recs, _ = planted_corpus(60, seed=3)
    path = tmp_path / "small.jsonl"
    write_jsonl(path, recs)
    return path


def test_interrupted_run_resumes_to_identical_output(tmp_path, monkeypatch):
    path = _small_corpus(tmp_path)
    cfg = make_config("--read.batch_bytes=4096", "--writer.shard_bytes=12000")
    ref = clean([str(path)], tmp_path / "ref", cfg, workers=1, progress=False)
    assert len(ref["shards"]) >= 3
    real = stages.filter_batch
    calls = {"n": 0}

    def dying(task):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(stages, "filter_batch", dying)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        clean([str(path)], out, cfg, workers=1, progress=False)
    partial = sorted(p.name for p in out.glob("shard-*.jsonl.zst"))
    assert partial and not (out / "manifest.json").exists()
    assert not list(out.glob(".shard-*"))  # the shard being written was removed, not left half-done
    read_shards(out)  # every shard with a final name is complete and parses
    monkeypatch.setattr(stages, "filter_batch", real)
    done = clean([str(path)], out, cfg, workers=1, progress=False)
    assert done["resumed"] and [s["sha256"] for s in done["shards"]] == [s["sha256"] for s in ref["shards"]]
    assert done["steps"] == ref["steps"]
    again = clean([str(path)], out, cfg, workers=1, progress=False)  # complete: nothing to do
    assert again["created"] == done["created"]
    with pytest.raises(UserError, match="another `data clean` run"):
        clean([str(path)], out, make_config("--toxicity.threshold=0.9"), workers=1, progress=False)
    m = clean([str(path)], out, make_config("--toxicity.threshold=0.9"), workers=1, progress=False, restart=True)
    assert m["config"]["toxicity"]["threshold"] == 0.9


def test_workers_give_the_same_output(tmp_path):
    path = _small_corpus(tmp_path)
    cfg = make_config("--read.batch_bytes=4096")
    one = clean([str(path)], tmp_path / "one", cfg, workers=1, progress=False)
    two = clean([str(path)], tmp_path / "two", cfg, workers=2, progress=False)
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]
    assert one["steps"] == two["steps"]


def test_cli(planted, tmp_path, capsys):
    from llamaforge.cli import main

    _, _, path, bad_line = planted
    assert main(["data", "clean", str(path), "--out", str(tmp_path / "o"), "--workers", "1"]) == 2
    assert f"{path}:{bad_line}: malformed JSON" in capsys.readouterr().err
    rc = main(["data", "clean", str(path), "--out", str(tmp_path / "o"), "--workers", "1", "--skip-bad",
               "--no-progress", "--quality.min_words=10", "--toxicity.action", "drop"])
    out = capsys.readouterr()
    assert rc == 0 and "toxicity (drop)" in out.out and f":{bad_line}: malformed JSON" in out.err
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["config"]["quality"]["min_words"] == 10 and (tmp_path / "o" / "config.toml").is_file()
    assert main(["data", "clean", str(path), "--out", str(tmp_path / "o2"), "--neardup.nope=1"]) == 2


def test_mixed_formats_and_fields(tmp_path):
    """txt blocks, parquet rows and .jsonl.gz in one run: text and other fields carried through."""
    import gzip

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from llamaforge.data.clean.synth import ProseGenerator

    gen = ProseGenerator(11)
    docs = [gen.document(3, 5) for _ in range(9)]
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_text("\n\n".join(d.replace("\n", " ") for d in docs[:3]) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"content": docs[3:6], "n": [3, 4, 5]}), src / "b.parquet")
    with gzip.open(src / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        for i, d in enumerate(docs[6:]):
            f.write(json.dumps({"content": d, "n": 6 + i}) + "\n")
    cfg = make_config("--read.txt_mode=blocks", "--read.text_field=content", "--writer.provenance=true")
    m = clean([str(src)], tmp_path / "out", cfg, workers=1, progress=False)
    out = read_shards(tmp_path / "out")
    assert m["totals"]["docs_out"] == len(out) == 9
    assert [r.get("n") for r in out] == [None, None, None, 3, 4, 5, 6, 7, 8]
    assert out[1]["source"].endswith("a.txt:3") and out[3]["source"].endswith("b.parquet#row0")
    assert out[8]["content"] == docs[8] and "text" not in out[8]
