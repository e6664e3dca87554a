"""Same seed and size: the same files byte for byte; another seed: other data; the CLI."""

from __future__ import annotations

import pytest

from llamaforge import cli
from llamaforge.align.world import FILES, main, make_world
from llamaforge.errors import UserError


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    make_world(tmp_path / "a", seed=7, size=300)
    make_world(tmp_path / "b", seed=7, size=300)
    make_world(tmp_path / "c", seed=8, size=300)
    for name in FILES:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes(), name
        assert a != (tmp_path / "c" / name).read_bytes(), name


def test_cli_writes_files_and_rejects_bad_input(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "w"), "--seed", "3", "--size", "60"]) == 0
    assert "sft 60" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted([*FILES, "manifest.json"])
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "llamaforge world make --out" in capsys.readouterr().out
    with pytest.raises(UserError, match="too small"):
        main(["--out", str(tmp_path / "x"), "--size", "3"])
    (tmp_path / "file").write_text("x")
    assert cli.main(["world", "make", "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err
