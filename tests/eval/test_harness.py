"""The lm-eval bridge: equal to lm_eval's own `hf` model on the same weights; the shipped task YAMLs
run offline on the fixture files in each benchmark's public format."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402

from llamaforge.eval.generation import fixed_generate_fn  # noqa: E402
from llamaforge.eval.harness import TASKS_DIR, LlamaforgeLM, prepare_tasks, run_harness  # noqa: E402

PAIRS = [("Question: what is 2+2?\nAnswer:", " 4"), ("The cat sat on the", " mat and slept."),
         ("", "def foo(x):\n    return x"), ("hello ", "world"), ("import os", "\nimport sys"),
         ("x = [1, 2, 3]\nprint(", "len(x))")]
ALL_TASKS = ["arc_easy_local", "arc_challenge_local", "hellaswag_local", "piqa_local", "boolq_local", "mmlu_local",
             "gsm8k_local", "humaneval_local", "humaneval_sampled_local"]


def _answer(prompt: str) -> str:
    """Fixed 'generations': right for the first GSM8K question and the first HumanEval problem."""
    if "def add" in prompt:
        return "    return a + b\n"
    if "def is_even" in prompt:
        return "    return n % 2 == 1\n"
    if "Natalia" in prompt:
        return " 48 + 24 = 72\n#### 72"
    return " I do not know.\n#### 3"


def test_loglikelihood_equals_lm_eval_hf(tiny_checkpoint, tiny_hf, fixtures):
    pytest.importorskip("accelerate")  # lm_eval's hf model imports it
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=str(tiny_hf), add_bos_token=True, batch_size=4, device="cpu", dtype="float32")
    ours = LlamaforgeLM(path=str(tiny_checkpoint), batch_size=4)
    reqs = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(PAIRS)]
    theirs, mine = hf.loglikelihood(reqs, disable_tqdm=True), ours.loglikelihood(reqs, disable_tqdm=True)
    for (a, ga), (b, gb) in zip(theirs, mine, strict=True):
        assert abs(a - b) < 1e-4 and ga == gb
    assert len({round(a, 3) for a, _ in mine}) == len(PAIRS)  # not trivially equal numbers
    # the same on a small local task, end to end through lm_eval (per-choice loglikelihoods and acc)
    tasks = ["arc_easy_local", "hellaswag_local"]
    data = fixtures / "academic"
    r_hf = run_harness(hf, tasks, data_dir=data, log_samples=True)
    r_ours = run_harness(ours, tasks, data_dir=data, log_samples=True)
    for t in tasks:
        assert r_hf["results"][t]["acc,none"] == r_ours["results"][t]["acc,none"]
        assert r_hf["results"][t]["acc_norm,none"] == r_ours["results"][t]["acc_norm,none"]
        a = [ll for s in r_hf["samples"][t] for ll, _ in s["filtered_resps"]]
        b = [ll for s in r_ours["samples"][t] for ll, _ in s["filtered_resps"]]
        assert len(a) == len(b) >= 8 and max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    # rolling (perplexity tasks): lm_eval's hf model scores a BOS it added itself when add_bos_token=True,
    # so compare with add_bos_token=False, where both score every token of the text after BOS.
    hf2 = HFLM(pretrained=str(tiny_hf), add_bos_token=False, batch_size=4, device="cpu", dtype="float32",
               max_length=16)
    ours2 = LlamaforgeLM(path=str(tiny_checkpoint), batch_size=4, max_length=16)
    texts = ["def f(x):\n    return x * 2\n\nclass A:\n    pass\n" * 2, "short"]
    rr = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    for a, b in zip(hf2.loglikelihood_rolling(rr, disable_tqdm=True), ours2.loglikelihood_rolling(rr), strict=True):
        assert abs(a - b) < 1e-4


def test_shipped_tasks_run_offline_on_fixtures(tiny_checkpoint, fixtures, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data paths must not depend on the working directory
    lm = LlamaforgeLM(path=str(tiny_checkpoint), generate_fn=fixed_generate_fn(_answer))
    res = run_harness(lm, ALL_TASKS, data_dir=fixtures / "academic", allow_code_execution=True)["results"]
    sizes = {"arc_easy_local": 3, "arc_challenge_local": 2, "hellaswag_local": 2, "piqa_local": 2,
             "boolq_local": 2, "mmlu_local": 2, "gsm8k_local": 2, "humaneval_local": 2}
    for task, n in sizes.items():
        assert res[task]["sample_len"] == n
    for task in ("arc_easy_local", "hellaswag_local", "piqa_local", "boolq_local", "mmlu_local"):
        assert 0.0 <= res[task]["acc,none"] <= 1.0
    assert res["gsm8k_local"]["exact_match,strict-match"] == 0.5  # "#### 72" right, "#### 3" wrong
    assert res["humaneval_local"]["pass@1,create_test"] == 0.5  # add passes, is_even fails
    assert res["humaneval_sampled_local"]["pass@10,create_test"] == 0.5


def test_humaneval_needs_permission(tiny_checkpoint, fixtures):
    lm = LlamaforgeLM(path=str(tiny_checkpoint), generate_fn=fixed_generate_fn(_answer))
    with pytest.raises(ValueError, match="unsafe"):
        run_harness(lm, ["humaneval_local"], data_dir=fixtures / "academic")


def test_prepare_tasks_resolves_data_paths(fixtures):
    d = prepare_tasks(None, fixtures / "academic")
    try:
        text = (d / "arc_easy.yaml").read_text()
        assert f"test: {(fixtures / 'academic').resolve()}/arc/ARC-Easy-Test.jsonl" in text
        assert "!function utils.arc_process_docs" in text and (d / "utils.py").is_file()
    finally:
        shutil.rmtree(d)
    assert {p.stem for p in TASKS_DIR.glob("*.yaml")} >= {"arc_easy", "hellaswag", "mmlu", "gsm8k", "humaneval"}


def test_unknown_task_and_chat_template(tiny_checkpoint, fixtures):
    from llamaforge.errors import UserError

    lm = LlamaforgeLM(path=str(tiny_checkpoint), chat=True)
    with pytest.raises(UserError, match="unknown task.*arc_easy_local"):
        run_harness(lm, ["nope"], data_dir=fixtures / "academic")
    text = lm.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                   {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"}])
    assert text == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] 2+2? [/INST]"


def test_harness_cli(tiny_checkpoint, fixtures, tmp_path, capsys):
    from llamaforge.cli import main

    out = tmp_path / "r.json"
    assert main(["eval", "harness", "--model", str(tiny_checkpoint), "--tasks", "boolq_local,piqa_local",
                 "--data-dir", str(fixtures / "academic"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"boolq_local", "piqa_local"}
    assert "boolq_local" in capsys.readouterr().out


@pytest.mark.parametrize("rel,content,expect", [
    ("arc/ARC-Easy-Test.jsonl",
     '{"question": {"stem": "q", "choices": []}, "answerKey": "A"}\n{"question": {"stem": "q"}}\n',
     r"ARC-Easy-Test.jsonl:2: field 'question.choices' is missing"),
    ("mmlu/test/x_test.csv", "q,a,b,c,d,A\nq,a,b,c,d,E\n", r"x_test.csv:2: column 6 \(answer\)"),
    ("gsm8k/test.jsonl", '{"question": "q"}\n', r"test.jsonl:1: field 'answer' is missing"),
])
def test_bad_task_data_names_file_line_field(tiny_checkpoint, fixtures, tmp_path, rel, content, expect):
    from llamaforge.errors import UserError

    data = tmp_path / "data"
    shutil.copytree(fixtures / "academic", data)
    (data / rel).write_text(content)
    task = {"arc": "arc_easy_local", "mmlu": "mmlu_local", "gsm8k": "gsm8k_local"}[rel.split("/")[0]]
    lm = LlamaforgeLM(path=str(tiny_checkpoint))
    with pytest.raises(UserError, match=expect):
        run_harness(lm, [task], data_dir=data)
    shutil.rmtree(data / "boolq")
    with pytest.raises(UserError, match=r"boolq_local: test file .*boolq/dev.jsonl not found"):
        run_harness(lm, ["boolq_local"], data_dir=data)


def test_long_generation_contexts_keep_their_end(tiny_checkpoint):
    seen = []
    lm = LlamaforgeLM(path=str(tiny_checkpoint), max_length=32,
                      generate_fn=lambda ps, s: seen.extend(ps) or ["x\nQuestion: y"] * len(ps))
    ctx = " ".join(f"word{i}" for i in range(200)) + " END"
    out = lm.generate_until([Instance("generate_until", {}, (ctx, {"until": ["Question:"], "max_gen_toks": 8}), 0)])
    assert out == ["x\n"]
    assert seen[0].endswith("END") and len(lm.tok.encode(seen[0], bos=True)) < 30  # was ~600 tokens
