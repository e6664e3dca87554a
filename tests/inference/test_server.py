"""The OpenAI-compatible server as a real subprocess: the official client, raw HTTP errors, concurrency."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")

KEY = "test-key"
MODEL = "tiny"  # the checkpoint directory's name
HEADERS = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hello, who are you?"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_chat_matches_local_generation(client, tiny_model, tokenizer):
    from llamaforge.generate import generate

    r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    want = generate(tiny_model, tokenizer, [HELLO], max_new_tokens=12, temperature=0)[0]
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == want
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(tokenizer.encode_chat_prompt(HELLO))
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream(client):
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completions_seed_n_and_stream(client):
    kw = dict(model=MODEL, prompt="def main(", max_tokens=10, temperature=0.9, seed=11, n=2)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1] and a.choices[0].text != a.choices[1].text
    assert a.usage.completion_tokens <= 20
    parts = ["", ""]
    for c in client.completions.create(stream=True, **kw):
        for ch in c.choices:
            parts[ch.index] += ch.text
    assert parts == [c.text for c in a.choices]
    two = client.completions.create(model=MODEL, prompt=["def main(", "import"], max_tokens=4, temperature=0)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].text == \
        client.completions.create(model=MODEL, prompt="def main(", max_tokens=4, temperature=0).choices[0].text


def test_stop_string(client):
    full = client.completions.create(model=MODEL, prompt="import", max_tokens=16, temperature=0).choices[0]
    stop = full.text[3:6]
    cut = client.completions.create(model=MODEL, prompt="import", max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].text == full.text[: full.text.index(stop)] and cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("body,status,needle", [
    ("{not json", 400, "not valid JSON"),
    ({"model": MODEL, "prompt": "a", "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": MODEL, "prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ({"model": MODEL, "prompt": 5}, 400, "prompt"),
    ({"model": MODEL, "prompt": "a", "max_tokens": 100000}, 400, "context length"),
    ({"model": "gpt-4", "prompt": "a"}, 404, "does not exist"),
    ({"prompt": "a"}, 400, "model"),
])
def test_completion_errors(server, body, status, needle):
    data = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(f"{server}/v1/completions", content=data, headers=HEADERS)
    assert r.status_code == status
    err = r.json()["error"]
    assert needle.lower() in err["message"].lower() and "type" in err


@pytest.mark.parametrize("messages,needle", [
    ([], "non-empty"),
    ([{"role": "user", "content": ""}], "empty content"),
    ([{"role": "wizard", "content": "x"}], "role"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last message"),
    ("hello", "messages"),
])
def test_chat_errors(server, messages, needle):
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": MODEL, "messages": messages}, headers=HEADERS)
    assert r.status_code == 400 and needle in r.json()["error"]["message"]


def test_auth_and_unknown_routes(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    assert httpx.post(f"{server}/v1/chat/completions", json=body).status_code == 401
    r = httpx.post(f"{server}/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server}/v1/models").status_code == 401
    r = httpx.get(f"{server}/v1/engines", headers=HEADERS)
    assert r.status_code == 404 and "error" in r.json()
    assert httpx.get(f"{server}/health").status_code == 200


def test_32_concurrent_clients(server):
    async def one(c, i):
        r = await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"Question {i}?"}],
                                            max_tokens=8, temperature=0.7, seed=i)
        return r.choices[0].finish_reason, r.usage.completion_tokens

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120) as c:
            return await asyncio.gather(*(one(c, i) for i in range(32)))

    results = asyncio.run(main())
    assert len(results) == 32 and all(f in ("stop", "length") and 1 <= n <= 8 for f, n in results)


def _load(server):
    return httpx.get(f"{server}/health").json()


def test_full_queue_answers_503_and_disconnects_free_slots(server):
    body = {"model": MODEL, "prompt": "def f(", "max_tokens": 400, "n": 16, "stream": True, "ignore_eos": True}
    url = f"{server}/v1/completions"
    with httpx.stream("POST", url, json=body, headers=HEADERS, timeout=60) as r1:
        assert r1.status_code == 200
        with httpx.stream("POST", url, json=body, headers=HEADERS, timeout=60) as r2:
            assert r2.status_code == 200
            deadline = time.time() + 10
            while _load(server)["running"] < 4:  # 4 slots busy, 28 rows waiting (max queue 40)
                assert time.time() < deadline
                time.sleep(0.05)
            r3 = httpx.post(url, json=body, headers=HEADERS, timeout=60)
            assert r3.status_code == 503 and r3.json()["error"]["code"] == "overloaded"
            next(r1.iter_lines())  # r1 is streaming
    deadline = time.time() + 20  # both clients went away mid-stream: their 32 rows are dropped
    while (_load(server)["running"], _load(server)["waiting"]) != (0, 0):
        assert time.time() < deadline, _load(server)
        time.sleep(0.2)
    ok = httpx.post(url, json={"model": MODEL, "prompt": "x", "max_tokens": 3}, headers=HEADERS, timeout=60)
    assert ok.status_code == 200


def test_non_streaming_client_that_goes_away_frees_its_slots(server):
    body = json.dumps({"model": MODEL, "prompt": "a", "max_tokens": 500, "n": 4, "ignore_eos": True}).encode()
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.time() + 10
        while _load(server)["running"] < 4:  # decoding (500 tokens take far longer than this test)
            assert time.time() < deadline
            time.sleep(0.05)
    deadline = time.time() + 10  # the socket is closed: the request's 4 rows must go
    while (_load(server)["running"], _load(server)["waiting"]) != (0, 0):
        assert time.time() < deadline, _load(server)
        time.sleep(0.1)


def test_logprobs_and_top_alternatives(client, server, tiny_model, tokenizer):
    """Chat logprobs/top_logprobs and completions logprobs=N return each sampled token's log-prob (equal to
    the local generator's) and its N most likely alternatives, best first; streaming carries the same
    numbers chunk by chunk; out-of-range requests get a 400 naming the field."""
    from llamaforge.generate import generate_ids
    from llamaforge.serve.protocol import token_piece

    r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, temperature=0, logprobs=True,
                                       top_logprobs=3)
    got = r.choices[0].logprobs.content
    local = generate_ids(tiny_model, [tokenizer.encode_chat_prompt(HELLO)], max_new_tokens=8, temperature=0,
                         stop_ids=[tokenizer.eos_id], logprobs=True)
    ids = local.row(0)
    assert len(got) == len(ids) == r.usage.completion_tokens
    assert [g.token for g in got] == [token_piece(tokenizer, t)[0] for t in ids]
    for g, lp in zip(got, local.logprobs[0, : len(ids)].tolist()):
        assert g.logprob == pytest.approx(lp, abs=1e-4) and g.logprob <= 0
        alts = [a.logprob for a in g.top_logprobs]
        assert len(alts) == 3 and alts == sorted(alts, reverse=True)
        assert alts[0] == pytest.approx(g.logprob, abs=1e-5)  # greedy: the sampled token is the most likely
        assert g.top_logprobs[0].token == g.token
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, temperature=0,
                                            logprobs=True, top_logprobs=3, stream=True)
    streamed = [c for ch in stream for c in ((ch.choices[0].logprobs.content or []) if ch.choices and
                                             ch.choices[0].logprobs else [])]
    assert [(x.token, round(x.logprob, 4), len(x.top_logprobs)) for x in streamed] == \
        [(x.token, round(x.logprob, 4), len(x.top_logprobs)) for x in got]

    c = client.completions.create(model=MODEL, prompt="def main(", max_tokens=6, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == c.usage.completion_tokens
    assert lp.text_offset[0] == 0 and all(x <= 0 for x in lp.token_logprobs)
    for tok, x, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert 1 <= len(top) <= 2 and top.get(tok) == pytest.approx(x, abs=1e-5)  # greedy token is in its top 2
    c0 = client.completions.create(model=MODEL, prompt="def main(", max_tokens=6, temperature=0, logprobs=0)
    assert c0.choices[0].logprobs.top_logprobs is None and c0.choices[0].logprobs.tokens == lp.tokens
    for body, field in (({"messages": HELLO, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
                        ({"messages": HELLO, "top_logprobs": 2}, "top_logprobs")):
        e = httpx.post(f"{server}/v1/chat/completions", json={"model": MODEL, **body}, headers=HEADERS)
        assert e.status_code == 400 and e.json()["error"]["param"] == field
    e = httpx.post(f"{server}/v1/completions", json={"model": MODEL, "prompt": "a", "logprobs": 6}, headers=HEADERS)
    assert e.status_code == 400 and "logprobs" in e.json()["error"]["message"]


def test_echo_with_prompt_logprobs_as_lm_eval_reads_them(client, server, tiny_model, tokenizer):
    """Token-id prompts with echo=true, logprobs=1, max_tokens=1 (lm_eval's local-completions
    loglikelihood request): every prompt token after the first has its log-prob under the model and
    its most likely alternative, and lm_eval's own parser reads the answer."""
    import torch
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    ctx, cont = tokenizer.encode("def main(", bos=True), tokenizer.encode(" return x", bos=False)
    ids = ctx + cont
    r = client.completions.create(model=MODEL, prompt=[ids], echo=True, logprobs=1, max_tokens=1, temperature=0)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(ids) + 1 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    with torch.no_grad():
        ref = torch.log_softmax(tiny_model(torch.tensor([ids]))[0, :-1].float(), -1)
    want = ref.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(torch.tensor(lp.token_logprobs[1:len(ids)]), want, atol=1e-4)
    assert all(max(t.values()) == pytest.approx(ref[i].max().item(), abs=1e-4)
               for i, t in enumerate(lp.top_logprobs[1:len(ids)]))
    assert r.choices[0].text.startswith(tokenizer.decode(ids))
    (total, greedy), = LocalCompletionsAPI.parse_logprobs(r.model_dump(), ctxlens=[len(ctx)])
    assert total == pytest.approx(want[len(ctx) - 1:].sum().item(), abs=1e-3)
    assert greedy == bool((ref[len(ctx) - 1:].argmax(-1) == torch.tensor(cont)).all())
    t = client.completions.create(model=MODEL, prompt="def main(", echo=True, max_tokens=3, temperature=0)
    assert t.choices[0].text.startswith("def main(") and t.choices[0].logprobs is None
    for body in ({"prompt": [5, -1]}, {"prompt": "a", "echo": True, "stream": True}):
        e = httpx.post(f"{server}/v1/completions", json={"model": MODEL, **body}, headers=HEADERS)
        assert e.status_code == 400 and e.json()["error"]["param"] in ("prompt", "echo")


def test_lm_eval_local_completions_scores_a_task_through_the_server(server, tiny_checkpoint, tmp_path):
    """lm_eval's own `local-completions` model, pointed at the server, gives the same per-choice
    loglikelihoods on a local multiple-choice task as our in-process lm_eval model."""
    pytest.importorskip("tenacity")  # lm_eval's API models need it (extra `eval`)
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from llamaforge.cli import main
    from llamaforge.eval.harness import LlamaforgeLM, run_harness

    hf_tok = tmp_path / "hf"  # lm_eval tokenizes with transformers: the HF export's tokenizer, as the guide says
    assert main(["convert", str(tiny_checkpoint), str(hf_tok), "--to", "hf"]) == 0
    remote = LocalCompletionsAPI(base_url=f"{server}/v1/completions", model=MODEL, tokenizer=str(hf_tok),
                                 tokenizer_backend="huggingface", header=HEADERS, max_retries=1, batch_size=4,
                                 add_bos_token=True)
    fixtures = Path(__file__).parents[1] / "eval" / "fixtures" / "academic"
    task = "arc_easy_local"
    r_api = run_harness(remote, [task], data_dir=fixtures, log_samples=True)
    r_ours = run_harness(LlamaforgeLM(path=str(tiny_checkpoint), batch_size=4), [task], data_dir=fixtures,
                         log_samples=True)
    a = [ll for s in r_api["samples"][task] for ll, _ in s["filtered_resps"]]
    b = [ll for s in r_ours["samples"][task] for ll, _ in s["filtered_resps"]]
    assert len(a) == len(b) >= 8 and max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-3
    assert r_api["results"][task]["acc,none"] == r_ours["results"][task]["acc,none"]
