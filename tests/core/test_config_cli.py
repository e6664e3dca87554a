"""Typed configs (TOML + dotted overrides), the CLI table, atomic writes."""

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from llamaforge.config import dump_toml, load_config, parse_overrides
from llamaforge.errors import UserError


@dataclass
class Train:
    steps: int = 10
    lr: float = 3e-4
    dtype: str = "fp32"
    compile: bool = False
    tags: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)


@dataclass
class Model:
    preset: str | None = None
    dim: int = 64


@dataclass
class Cfg:
    train: Train = field(default_factory=Train)
    model: Model = field(default_factory=Model)


def test_toml_then_overrides_both_syntaxes(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nsteps = 5\nlr = 1e-3\nsources = [{path = "a", weight = 2.0}]\n[model]\npreset = "tiny-1m"\n')
    cfg = load_config(Cfg, f, ["--train.steps=7", "--train.compile", "true", "--model.dim", "128"])
    assert (cfg.train.steps, cfg.train.lr, cfg.train.compile, cfg.model.dim) == (7, 1e-3, True, 128)
    assert cfg.train.sources == [{"path": "a", "weight": 2.0}]
    assert cfg.model.preset == "tiny-1m"


def test_unknown_key_lists_valid_ones(tmp_path):
    with pytest.raises(UserError, match=r"unknown key train\.stepz.*valid keys.*steps"):
        load_config(Cfg, None, ["--train.stepz=3"])
    with pytest.raises(UserError, match=r"unknown key .*optimm"):
        load_config(Cfg, None, ["--optimm.lr=3"])


def test_type_errors_name_the_field():
    with pytest.raises(UserError, match=r"train\.steps: expected an integer"):
        load_config(Cfg, None, ["--train.steps=ten"])
    with pytest.raises(UserError, match=r"train\.compile: expected true or false"):
        load_config(Cfg, None, ["--train.compile=maybe"])


def test_bad_toml_names_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[train\nsteps=")
    with pytest.raises(UserError, match="bad.toml: invalid TOML"):
        load_config(Cfg, f)


def test_dump_round_trips(tmp_path):
    cfg = load_config(Cfg, None, ["--train.tags=a,b", "--model.preset=x"])
    f = tmp_path / "out.toml"
    f.write_text(dump_toml(cfg))
    assert load_config(Cfg, f) == cfg


def test_override_parsing_errors():
    with pytest.raises(UserError, match="overrides look like"):
        parse_overrides(["steps=3"])
    with pytest.raises(UserError, match="needs a value"):
        parse_overrides(["--train.steps"])


def test_cli_help_and_unknown_command():
    out = subprocess.run([sys.executable, "-m", "llamaforge", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "pretrain" in out.stdout and "serve" in out.stdout
    out = subprocess.run([sys.executable, "-m", "llamaforge", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command" in out.stderr


def test_cli_user_error_has_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "llamaforge", "convert", str(tmp_path / "nope"), str(tmp_path / "x"),
                          "--to", "hf"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "not found" in out.stderr and "Traceback" not in out.stderr


def test_atomic_file_keeps_old_on_failure(tmp_path):
    from llamaforge.io import atomic_dir, atomic_write_text

    f = tmp_path / "x.txt"
    atomic_write_text(f, "old")
    with pytest.raises(RuntimeError):
        from llamaforge.io import atomic_file

        with atomic_file(f) as h:
            h.write("new half")
            raise RuntimeError("crash")
    assert f.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    d = tmp_path / "d"
    with atomic_dir(d) as t:
        (t / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(d) as t:
            (t / "a").write_text("2")
            raise RuntimeError("crash")
    assert (d / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "x.txt"]
