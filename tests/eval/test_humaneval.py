"""The code-execution sandbox and pass@k."""

from __future__ import annotations

import math

import pytest

from llamaforge.eval.humaneval import network_isolated, pass_at_k, run_program, score_problem

DOC = {"prompt": "def add(a, b):\n", "test": "def check(f):\n    assert f(2, 3) == 5\n", "entry_point": "add"}


def test_pass_at_k_matches_the_formula():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 7, 5) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 10)


def test_programs_pass_fail_and_time_out():
    assert score_problem(DOC, ["    return a + b\n", "    return a - b\n"], ks=(1, 2)) == {"pass@1": 0.5,
                                                                                          "pass@2": 1.0}
    r = run_program("while True:\n    pass\n", timeout=1.0)
    assert not r.passed and r.status == "timeout"
    r = run_program("raise SystemExit(3)\n")
    assert r.status == "failed"


def test_sandbox_runs_in_a_temp_dir_with_limits(tmp_path):
    r = run_program("import os\nprint(os.getcwd())\nopen('x.txt', 'w').write('hi')\n")
    assert r.passed and "llamaforge-exec-" in r.output and str(tmp_path) not in r.output
    r = run_program("x = bytearray(4 * 1024 ** 3)\n")  # 4 GiB: over the address-space limit
    assert not r.passed and "MemoryError" in r.output
    r = run_program("import os\nprint(sorted(os.environ))\n")
    assert "HOME" in r.output and "PYTHONPATH" not in r.output


@pytest.mark.skipif(not network_isolated(), reason="unshare -rn not permitted here (documented)")
def test_no_network():
    prog = ("import socket\ns = socket.socket()\ns.settimeout(2)\n"
            "raise SystemExit(0 if s.connect_ex(('1.1.1.1', 53)) != 0 else 1)\n")
    assert run_program(prog).passed
    assert "lo" in run_program("import socket\nprint(socket.if_nameindex())\n").output
