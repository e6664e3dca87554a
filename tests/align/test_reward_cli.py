"""Reward models end to end: training on the world's preferences (resume exact), eval.json by rating,
scoring, sampling pairs for annotation, the HTML page, and the importers."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llamaforge.align.reward import load_reward_model
from llamaforge.cli import main
from llamaforge.data.chat import RATINGS, load_pref_pairs

ROOT = Path(__file__).resolve().parents[2]


def _cmd(init, data, out):
    return [sys.executable, "-m", "llamaforge", "reward", "train", "--config", "configs/reward/tiny.toml",
            "--init", str(init), "--data.path", str(data), "--kind", "helpfulness", "--out", str(out),
            "--train.steps=4", "--train.batch_size=8", "--train.micro_batch=4", "--train.seq_len=128",
            "--checkpoint.every=2", "--logging.every=1", "--logging.eval_every=0", "--logging.progress=false",
            "--train.threads=1"]


def _losses(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory, tiny_checkpoint, world_dir):
    out = tmp_path_factory.mktemp("rm") / "a"
    r = subprocess.run(_cmd(tiny_checkpoint, world_dir / "prefs_helpful.jsonl", out), capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_train_writes_model_and_eval_by_rating(rm_run):
    ev = json.loads((rm_run / "eval.json").read_text())
    assert set(ev["accuracy_by_rating"]) == set(RATINGS)
    assert ev["pairs"] == sum(ev["count_by_rating"].values()) > 0
    assert 0 <= ev["accuracy"] <= 1 and ev["kind"] == "helpfulness"
    assert (rm_run / "plots" / "accuracy_by_rating.png").stat().st_size > 1000
    rm = load_reward_model(rm_run / "final")
    s = rm.score(["Add 2 and 3.", "Add 2 and 3."], ["2 + 3 is 5.", "banana"])
    assert s.shape == (2,) and torch.isfinite(s).all()
    man = json.loads((rm_run / "manifest.json").read_text())
    assert man["command"] == "reward train" and man["config"]["optim"]["warmup_steps"] == 4  # 3%, >= 5, <= steps


def test_resume_after_sigkill_is_exact(tmp_path, rm_run, tiny_checkpoint, world_dir):
    out = tmp_path / "b"
    cmd = _cmd(tiny_checkpoint, world_dir / "prefs_helpful.jsonl", out)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "LLAMAFORGE_FAULT": "kill_in_save:2"})
    assert r.returncode == -9
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _losses(out) == _losses(rm_run)


def _fails(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err


def test_score_cli(tmp_path, rm_run, capsys):
    f = tmp_path / "ans.jsonl"
    f.write_text(json.dumps({"prompt": "Add 2 and 3.", "answer": "2 + 3 is 5.", "id": 7}) + "\n"
                 + json.dumps({"messages": [{"role": "user", "content": "hi"}], "answer": "hello"}) + "\n")
    assert main(["reward", "score", "--model", str(rm_run / "final"), "--data.path", str(f),
                 "--out", str(tmp_path / "s.jsonl")]) == 0
    recs = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r.get("id") for r in recs] == [7, None] and all(isinstance(r["score"], float) for r in recs)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}) + "\n")
    _fails(capsys, ["reward", "score", "--model", str(rm_run / "final"), "--data.path", str(bad), "--out",
                    str(tmp_path / "o.jsonl")], r"bad.jsonl:1: field 'answer'")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, tiny_checkpoint, world_dir):
    out = tmp_path_factory.mktemp("pairs") / "tasks.jsonl"
    assert main(["reward", "sample-pairs", "--models", str(tiny_checkpoint), "--prompts",
                 str(world_dir / "prompts_train.jsonl"), "--temperatures", "0.7,1.2", "--out", str(out),
                 "--limit", "4", "--max-new-tokens", "6"]) == 0
    return out


def test_sample_pairs_writes_tasks_and_page(tasks):
    recs = [json.loads(x) for x in tasks.read_text().splitlines()]
    assert len(recs) == 4
    assert all(r["source_a"]["temperature"] == 0.7 and r["source_b"]["temperature"] == 1.2 for r in recs)
    page = tasks.with_suffix(".html").read_text()
    assert "<script id=\"data\" type=\"application/json\">" in page and recs[0]["id"] in page
    assert "</script><" not in page.split('type="application/json">')[1].split("</script>")[0]


def test_import_rated_tasks(tmp_path, tasks, capsys):
    recs = [json.loads(x) for x in tasks.read_text().splitlines()]
    for r in recs:
        r["answer_a"], r["answer_b"] = r["answer_a"] or "a", r["answer_b"] or "b"
    recs[0].update(choice="b", rating="better", safety=True)
    recs[1].update(choice="a", rating="negligibly_better", safety=False)
    rated = tmp_path / "rated.jsonl"
    rated.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["reward", "import", "--in", str(rated), "--out", str(tmp_path / "p.jsonl")]) == 0
    pairs = load_pref_pairs(tmp_path / "p.jsonl")
    assert len(pairs) == 2  # unrated tasks are skipped and counted
    assert pairs[0].chosen == recs[0]["answer_b"] and pairs[0].rating == "better" and pairs[0].safety is True
    recs[2].update(choice="c", rating="better")
    rated.write_text("".join(json.dumps(r) + "\n" for r in recs))
    _fails(capsys, ["reward", "import", "--in", str(rated), "--out", str(tmp_path / "p2.jsonl")],
           r"rated.jsonl:3: field 'choice'")


def test_import_hh_and_shp(tmp_path, capsys):
    hh = tmp_path / "hh.jsonl"
    hh.write_text(json.dumps({"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 4",
                              "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 5"})
                  + "\n")
    assert main(["reward", "import", "--format", "hh", "--in", str(hh), "--out", str(tmp_path / "hh_out.jsonl")]) == 0
    p = load_pref_pairs(tmp_path / "hh_out.jsonl")[0]
    assert (p.chosen, p.rejected, p.margin) == ("4", "5", 0.0)
    assert [m["role"] for m in p.messages] == ["user", "assistant", "user"] and p.messages[-1]["content"] == "2+2?"
    shp = tmp_path / "shp.jsonl"
    shp.write_text(json.dumps({"history": "Why is the sky blue?", "human_ref_A": "Rayleigh scattering.",
                               "human_ref_B": "Because.", "labels": 1, "score_ratio": 12.0}) + "\n"
                   + json.dumps({"history": "Best pet?", "human_ref_A": "Cats.", "human_ref_B": "Dogs.",
                                 "labels": 0, "score_ratio": 1.2}) + "\n")
    assert main(["reward", "import", "--format", "shp", "--in", str(shp), "--out", str(tmp_path / "s.jsonl")]) == 0
    a, b = load_pref_pairs(tmp_path / "s.jsonl")
    assert (a.chosen, a.rating) == ("Rayleigh scattering.", "significantly_better")
    assert (b.chosen, b.rating) == ("Dogs.", "negligibly_better")
    shp.write_text(json.dumps({"history": "x", "human_ref_A": "a"}) + "\n")
    _fails(capsys, ["reward", "import", "--format", "shp", "--in", str(shp), "--out", str(tmp_path / "s2.jsonl")],
           r"shp.jsonl:1: SHP field 'human_ref_B'")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_annotation_page_in_headless_chromium(tmp_path, tasks):
    """Load the page, rate two tasks with its own controls, and check that the page's download is importable."""
    page = tasks.with_suffix(".html").read_text()
    driver = """<script>window.addEventListener('load',()=>{
      const divs=document.querySelectorAll('.task');
      divs[0].querySelector('input[value=b]').click();
      const s=divs[1].querySelector('select'); s.value='slightly_better';
      divs[1].querySelector('input[value=a]').click();
      const orig=URL.createObjectURL; URL.createObjectURL=(b)=>{b.text().then(t=>{
        const pre=document.createElement('pre'); pre.id='out'; pre.textContent=t; document.body.appendChild(pre);
        document.title='DONE';}); return orig(b);};
      document.getElementById('download').click();});</script></body>"""
    (tmp_path / "p.html").write_text(page.replace("</body>", driver))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}",
           "--virtual-time-budget=10000", "--dump-dom", f"file://{tmp_path / 'p.html'}"]
    # Its own process group, so that on a timeout the renderer children die too (they hold the pipes).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:  # seen on a loaded machine: the browser, not the page, hangs
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.skip("headless Chromium did not finish within 90 s")
    r = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    dom = r.stdout
    assert '<pre id="out">' in dom, r.stderr[-1000:]
    import html

    text = html.unescape(dom.split('<pre id="out">')[1].split("</pre>")[0])
    (tmp_path / "rated.jsonl").write_text(text)
    recs = [json.loads(x) for x in text.splitlines() if x.strip()]
    assert [r["choice"] for r in recs] == ["b", "a"] and recs[1]["rating"] == "slightly_better"
    for r in recs:
        r["answer_a"], r["answer_b"] = r["answer_a"] or "a", r["answer_b"] or "b"
    (tmp_path / "rated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["reward", "import", "--in", str(tmp_path / "rated.jsonl"), "--out", str(tmp_path / "p.jsonl")]) == 0
