"""`data report`: exact pronoun and descriptor counts, outputs, and a cleaned corpus's manifest."""

from __future__ import annotations

import json

from llamaforge.data.report import report

KNOWN = [
    # he: he, his, him (3); she: she (1)
    "He said his dog likes him. She smiled.",
    # they: they, them, their (3); he: he's (1)
    "They gave them their books; he's here now.",
    # she: hers, she, herself, her (4)
    "Hers was the one she kept for herself, said her friend.",
    # none: 'the', 'theme', 'hence', 'shell', 'hero', 'therein' contain pronouns only as substrings
    "The theme is hence a shell of the hero therein.",
    # descriptors: nationality american; race and ethnicity african american; gender and sex woman, man
    "An American woman met an African American man.",
]


def test_pronoun_and_descriptor_counts_are_exact(tmp_path):
    src = tmp_path / "known.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in KNOWN) + json.dumps({"text": KNOWN[0]}) + "\n")
    r = report([str(src)], tmp_path / "rep", workers=1, language=False, toxicity=False)
    p = r["pronouns"]
    assert (p["he"]["docs"], p["he"]["occurrences"]) == (3, 3 + 1 + 3)  # KNOWN[0] twice
    assert (p["she"]["docs"], p["she"]["occurrences"]) == (3, 1 + 4 + 1)
    assert (p["they"]["docs"], p["they"]["occurrences"]) == (1, 3)
    assert p["any"]["docs"] == 4 and p["he"]["share_of_docs"] == 3 / 6
    d = r["demographic_descriptors"]
    assert d["nationality"]["terms"] == {"american": {"docs": 1, "share_of_axis_docs": 1.0}}
    assert d["race and ethnicity"]["terms"]["african american"]["docs"] == 1
    assert set(d["gender and sex"]["terms"]) == {"woman", "man"} and d["religion"]["docs"] == 0
    assert r["duplicates"]["exact_duplicates_in_corpus"] == 1
    assert r["documents"] == 6 and r["words"] == sum(len(t.split()) for t in KNOWN + KNOWN[:1])


def test_report_outputs_on_cleaned_corpus(cleaned, tmp_path):
    manifest, out_records, out_dir = cleaned
    r = report([str(out_dir)], tmp_path / "rep", workers=1)
    assert r["documents"] == len(out_records)
    assert r["duplicates"]["removed_by_data_clean"] == {"dedup": manifest["steps"]["dedup"]["dropped"],
                                                       "neardup": manifest["steps"]["neardup"]["dropped"]}
    assert r["duplicates"]["near_duplicate_clusters"] == {"clusters": 5, "largest_cluster": 2}
    assert r["bad_records_skipped_by_data_clean"][0]["reason"].startswith("malformed JSON")
    assert r["languages"]["counts"] == {"en": len(out_records)}
    assert r["toxicity"]["docs_at_or_above_0.5"] == 4  # the planted toxic documents (annotated, kept)
    assert r["pii"]["email (scrubbed)"] == 3 and "email" not in r["pii"]
    assert sum(r["length_histogram"]["counts"]) == len(out_records)
    for name in ("report.json", "report.md", "manifest.json", "length_hist.png", "toxicity_hist.png", "languages.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| he |" in md and "## Languages" in md and "## Bad records skipped" in md


def test_report_cli_skip_bad(planted, tmp_path, capsys):
    from llamaforge.cli import main

    _, _, path, bad_line = planted
    assert main(["data", "report", str(path), "--out", str(tmp_path / "r"), "--workers", "1"]) == 2
    assert f"{path}:{bad_line}: malformed JSON" in capsys.readouterr().err
    assert main(["data", "report", str(path), "--out", str(tmp_path / "r"), "--workers", "1", "--skip-bad",
                 "--no-progress", "--max-docs", "50", "--no-toxicity"]) == 0
    r = json.loads((tmp_path / "r" / "report.json").read_text())
    assert r["documents"] == 50 and r["toxicity"] is None
