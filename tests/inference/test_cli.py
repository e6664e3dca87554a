"""`llamaforge generate` (one prompt, batch JSONL with resume) and `llamaforge chat` driven through stdin."""

from __future__ import annotations

import json
import subprocess
import sys

from llamaforge.cli import main


def run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_generate_one_prompt_streams_the_completion(tiny_checkpoint, tiny_model, tokenizer, capsys):
    from llamaforge.generate import generate

    rc, out, _ = run(["generate", "--model", str(tiny_checkpoint), "--prompt", "def main(", "--max-new-tokens", "10",
                      "--temperature", "0"], capsys)
    assert rc == 0
    assert out == generate(tiny_model, tokenizer, ["def main("], max_new_tokens=10, temperature=0)[0] + "\n"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_batch_generate_is_resumable(tiny_checkpoint, tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    recs = [{"prompt": f"def f{i}(", "id": i} for i in range(5)]
    write_jsonl(src, recs)
    argv = ["generate", "--model", str(tiny_checkpoint), "--input", str(src), "--out", str(out),
            "--max-new-tokens", "6", "--batch-size", "2", "--temperature", "0.8"]
    assert run(argv, capsys)[0] == 0
    first = read_jsonl(out)
    assert [r["id"] for r in first] == list(range(5)) and all(isinstance(r["answer"], str) for r in first)
    # A crash mid-write leaves a torn last line; new records are appended to the input.
    out.write_text(out.read_text() + '{"prompt": "def f9(", "id"')
    write_jsonl(src, recs + [{"prompt": "x = ", "id": 5}, {"messages": "bad", "id": 6}])
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "in.jsonl:7" in err  # a malformed record names its line
    rc, _, err = run(argv + ["--skip-bad"], capsys)
    assert rc == 0 and "1 malformed skipped" in err and "5 already done" in err
    second = read_jsonl(out)
    assert [r["id"] for r in second] == list(range(6)) and second[:5] == first
    rc, _, err = run(argv + ["--skip-bad"], capsys)
    assert rc == 0 and "nothing to do" in err and read_jsonl(out) == second


def test_batch_generate_chat_records(tiny_checkpoint, tiny_model, tokenizer, tmp_path, capsys):
    from llamaforge.generate import generate

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    write_jsonl(src, [{"prompt": "Hello"}, {"messages": msgs}])
    argv = ["generate", "--model", str(tiny_checkpoint), "--chat", "--input", str(src), "--out", str(out),
            "--max-new-tokens", "8", "--temperature", "0"]
    assert run(argv, capsys)[0] == 0
    got = [r["answer"] for r in read_jsonl(out)]
    want = generate(tiny_model, tokenizer, [[{"role": "user", "content": "Hello"}], msgs], max_new_tokens=8,
                    temperature=0)
    assert got == want


def test_chat_repl_over_stdin(tiny_checkpoint, tiny_model, tokenizer, sub_env):
    from llamaforge.generate import generate

    lines = ["hello there", "tell me more about the weather today please", "/system be nice", "again",
             "/reset", "/nope", "one more", "/exit", "never read"]
    cmd = [sys.executable, "-m", "llamaforge", "chat", "--model", str(tiny_checkpoint), "--max-new-tokens", "12",
           "--context", "64", "--temperature", "0"]
    p = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, env=sub_env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    answers = p.stdout.splitlines()
    assert len(answers) == 4  # four user messages answered; nothing after /exit
    assert "dropped the 1 oldest turn" in p.stderr  # the second message does not fit beside the first
    assert "system prompt set" in p.stderr and "dialogue reset" in p.stderr and "unknown command /nope" in p.stderr
    # after /reset the dialogue is one turn again, under the system prompt set before
    fresh = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "one more"}]
    assert answers[3] == generate(tiny_model, tokenizer, [fresh], max_new_tokens=12, temperature=0)[0]
