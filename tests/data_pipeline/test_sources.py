"""Reading every format, file:line errors, --skip-bad counting, input expansion."""

from __future__ import annotations

import builtins
import gzip
import json

import pytest

from llamaforge.data.sources import BadRecords, expand_inputs, iter_documents
from llamaforge.errors import UserError

LINES = [{"text": "first", "id": 1}, {"text": "second", "id": 2, "meta": {"a": [1, 2]}}]


def _jsonl_bytes(extra: bytes = b"") -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in LINES) + extra


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_jsonl_formats_carry_fields_and_lines(tmp_path, suffix):
    import zstandard

    data = b"\n" + _jsonl_bytes()  # a blank first line is skipped but counted
    p = tmp_path / f"x{suffix}"
    p.write_bytes({".jsonl": data, ".jsonl.gz": gzip.compress(data),
                   ".jsonl.zst": zstandard.ZstdCompressor().compress(data)}[suffix])
    docs = list(iter_documents(p))
    assert [d.text for d in docs] == ["first", "second"]
    assert [d.line for d in docs] == [2, 3]
    assert docs[1].fields == {"id": 2, "meta": {"a": [1, 2]}}


def test_txt_file_and_blocks(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("para one\nstill one\n\n\npara two\n", encoding="utf-8")
    whole = list(iter_documents(p))
    assert len(whole) == 1 and whole[0].line is None and "para two" in whole[0].text
    blocks = list(iter_documents(p, txt_mode="blocks"))
    assert [(d.text, d.line) for d in blocks] == [("para one\nstill one\n", 1), ("para two\n", 5)]


def test_parquet_streams_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x", "y", "z"], "n": [1, 2, 3]}), p, row_group_size=2)
    docs = list(iter_documents(p, text_field="body"))
    assert [(d.text, d.fields["n"], d.row) for d in docs] == [("x", 1, 0), ("y", 2, 1), ("z", 3, 2)]


@pytest.mark.parametrize("bad, reason", [
    (b'{"text": "unterminated\n', "malformed JSON"),
    (b'{"body": "no text"}\n', "no 'text' field"),
    (b'{"text": 42}\n', "field 'text' is a number"),
    (b'{"text": "caf\xe9"}\n', "invalid UTF-8"),
    (b'[1, 2]\n', "record is an array"),
])
def test_bad_record_names_file_and_line(tmp_path, bad, reason):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(_jsonl_bytes(bad))
    with pytest.raises(UserError) as e:
        list(iter_documents(p))
    assert f"{p}:3: {reason}" in str(e.value) and "--skip-bad" in str(e.value)
    counted = BadRecords()
    assert len(list(iter_documents(p, skip_bad=True, bad=counted))) == 2
    assert counted.count == 1 and counted.examples[0][:2] == (str(p), 3)


def test_invalid_utf8_in_txt_block_points_at_its_line(tmp_path):
    p = tmp_path / "b.txt"
    p.write_bytes(b"ok block\n\nline one\nline \xff two\n")
    with pytest.raises(UserError, match=r"b\.txt:4: invalid UTF-8"):
        list(iter_documents(p, txt_mode="blocks"))


def test_truncated_gzip_is_an_error_or_counted(tmp_path):
    p = tmp_path / "t.jsonl.gz"
    p.write_bytes(gzip.compress(_jsonl_bytes() * 200)[:-30])
    with pytest.raises(UserError, match="unreadable file"):
        list(iter_documents(p))
    bad = BadRecords()
    docs = list(iter_documents(p, skip_bad=True, bad=bad))
    assert bad.count == 1 and len(docs) > 0


def test_expand_inputs_dirs_globs_hidden_and_errors(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.jsonl", "sub/b.txt", "sub/.hidden.jsonl", "notes.md"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / ".work").mkdir()
    (tmp_path / ".work" / "c.jsonl").write_text("x\n")
    assert [p.name for p in expand_inputs([str(tmp_path)])] == ["a.jsonl", "b.txt"]
    assert [p.name for p in expand_inputs([str(tmp_path / "**" / "*.txt")])] == ["b.txt"]
    assert len(expand_inputs([str(tmp_path / "a.jsonl"), str(tmp_path)])) == 2  # no duplicates
    with pytest.raises(UserError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.jsonl")])
    with pytest.raises(UserError, match="no input files match"):
        expand_inputs([str(tmp_path / "*.parquet")])
    with pytest.raises(UserError, match="unknown input format"):
        expand_inputs([str(tmp_path / "notes.md")])


def test_missing_zstandard_names_the_extra(tmp_path, monkeypatch):
    p = tmp_path / "x.jsonl.zst"
    p.write_bytes(b"")
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "zstandard":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(UserError, match=r"zstandard.*llamaforge\[data\]"):
        list(iter_documents(p))
