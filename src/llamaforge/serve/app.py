"""The OpenAI-compatible HTTP API: /v1/models, /v1/completions, /v1/chat/completions, /health.

Every error is answered in OpenAI's JSON shape; no request can take the server down. A client
that disconnects (mid-stream or while waiting) has its rows cancelled, freeing their slots.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from llamaforge.errors import UserError
from llamaforge.generate import Event
from llamaforge.sampling import SamplingParams
from llamaforge.serve.engine import Engine, QueueFull
from llamaforge.serve.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    new_id,
    now,
    token_piece,
    usage,
    wants_logprobs,
)

log = logging.getLogger("llamaforge.serve")


def create_app(engine: Engine, model_name: str, api_key: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="llamaforge", lifespan=lifespan)
    created = now()

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return JSONResponse(_validation_error(e.errors()).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        code = "not_found" if e.status_code == 404 else None
        return JSONResponse(APIError(e.status_code, str(e.detail), code=code).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):
        log.exception("unhandled error")
        return JSONResponse(APIError(500, f"internal error: {type(e).__name__}", type="server_error").body(),
                            status_code=500)

    def check(request: Request, model: str | None = None) -> None:
        if api_key is not None:
            auth = request.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                raise APIError(401, "Incorrect or missing API key; send 'Authorization: Bearer <key>'",
                               code="invalid_api_key")
        if model is not None and model != model_name:
            raise APIError(404, f"The model '{model}' does not exist; this server serves '{model_name}'",
                           param="model", code="model_not_found")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, **engine.load}

    @app.get("/v1/models")
    async def models(request: Request):
        check(request)
        return {"object": "list", "data": [_model_card(model_name, created)]}

    @app.get("/v1/models/{name}")
    async def model(name: str, request: Request):
        check(request, name)
        return _model_card(model_name, created)

    @app.post("/v1/completions")
    async def completions(request: Request):
        check(request)
        body = await _parse(request, CompletionRequest)
        check(request, body.model)
        prompts = body.prompt_list()
        encoded = [_encode_text(engine, p) for p in prompts]
        rows = _rows(engine, body, encoded, body.max_tokens)
        echo = None
        if body.echo:  # the prompts' own log-probs: one forward each, off the event loop
            n_top = body.logprobs or 0
            echo = [(ids, p if isinstance(p, str) else engine.tokenizer.decode(ids),
                     await asyncio.to_thread(engine.prompt_logprobs, ids, n_top) if body.logprobs is not None
                     else None) for p, (ids, _) in zip(prompts, encoded)]
        return await _respond(engine, request, body, rows, [len(e[0]) for e in encoded], chat=False, echo=echo)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        check(request)
        body = await _parse(request, ChatRequest)
        check(request, body.model)
        if not body.messages:
            raise APIError(400, "'messages' must be a non-empty list", param="messages")
        msgs = [{"role": m.role, "content": m.text()} for m in body.messages]
        if msgs[-1]["role"] != "user":
            raise APIError(400, "the last message must be from the user", param="messages")
        try:
            ids = engine.tokenizer.encode_chat_prompt(msgs)
        except UserError as e:
            raise APIError(400, str(e), param="messages") from None
        max_tokens = body.max_completion_tokens or body.max_tokens
        rows = _rows(engine, body, [(ids, None)], max_tokens)
        return await _respond(engine, request, body, rows, [len(ids)], chat=True)

    return app


async def _parse(request: Request, cls):
    """The JSON body (whatever the Content-Type says) validated into `cls`, or a 400."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"request body is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise _validation_error(e.errors()) from None


def _validation_error(errs: list) -> APIError:
    first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    # pydantic appends the union member tried ("stop.str"); keep the field path readable
    where = ".".join(x for x in loc if x not in ("str", "list[str]", "list[ContentPart]", "int", "float"))
    return APIError(400, f"{where or 'body'}: {first.get('msg')}", param=where or None)


def _model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "llamaforge"}


def _encode_text(engine: Engine, prompt: str | list[int]) -> tuple[list[int], int | None]:
    ids = engine.tokenizer.encode(prompt, bos=True) if isinstance(prompt, str) else list(prompt)
    vocab = engine.decoder.model.args.vocab_size
    if min(ids) < 0 or max(ids) >= vocab:
        raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
    return ids, (ids[-1] if len(ids) > 1 else None)


def _rows(engine: Engine, body, encoded: list[tuple[list[int], int | None]], max_tokens: int | None
          ) -> list[tuple[list[int], SamplingParams, int | None]]:
    """One decoder row per (prompt, choice); choice j of a seeded request uses seed + j."""
    stops = body.stop_list()
    want_lp, n_top = wants_logprobs(body)
    rows = []
    for ids, prefix in encoded:
        room = engine.context - len(ids)
        mt = max_tokens if max_tokens is not None else room
        if room < 1 or mt > room:
            raise APIError(400, f"This model's maximum context length is {engine.context} tokens; the prompt has "
                           f"{len(ids)} tokens and max_tokens is {mt}. Shorten the prompt or lower max_tokens.",
                           param="messages" if prefix is None else "prompt", code="context_length_exceeded")
        for j in range(body.n):
            params = SamplingParams(max_new_tokens=mt, temperature=body.temperature, top_p=body.top_p,
                                    top_k=body.top_k, stop=stops, stop_ids=[] if body.ignore_eos else None,
                                    seed=None if body.seed is None else body.seed + j, logprobs=want_lp,
                                    top_logprobs=n_top)
            rows.append((ids, params, prefix))
    return rows


async def _respond(engine: Engine, request: Request, body, rows, prompt_lens: list[int], chat: bool,
                   echo: list[tuple[list[int], str, list[Event] | None]] | None = None):
    """Submit the rows and answer (JSON or a stream). echo: per prompt (ids, text, its tokens as Events
    with log-probs, or None), put before each of its choices' completions."""
    queue: asyncio.Queue = asyncio.Queue()
    try:
        rids = engine.submit(rows, queue)
    except QueueFull:
        raise APIError(503, "The server is overloaded (request queue full); retry later.", type="server_error",
                       code="overloaded") from None
    except UserError as e:
        raise APIError(400, str(e)) from None
    index = {rid: i for i, rid in enumerate(rids)}
    rid_ = new_id("chatcmpl" if chat else "cmpl")
    meta = {"id": rid_, "object": "chat.completion" if chat else "text_completion", "created": now(),
            "model": body.model}
    if body.stream:
        lp_spec = (rows[0][1].logprobs, rows[0][1].top_logprobs)
        gen = _stream(engine, queue, rids, index, meta, chat, sum(prompt_lens), body.include_usage(), lp_spec)
        return StreamingResponse(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    texts, counts, reasons = [""] * len(rids), [0] * len(rids), [None] * len(rids)
    lps: list[list[Event]] = [[] for _ in rids]
    left = len(rids)
    try:
        while left:
            try:
                ev = await asyncio.wait_for(queue.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    engine.cancel(rids)
                    return JSONResponse({}, status_code=499)
                continue
            if isinstance(ev, Exception):
                raise APIError(500, f"generation failed: {ev}", type="server_error")
            i = index[ev.rid]
            texts[i] += ev.text
            counts[i] += 1
            if ev.logprob is not None:
                lps[i].append(ev)
            if ev.finish:
                reasons[i] = ev.finish
                left -= 1
    finally:
        if left:
            engine.cancel(rids)
    want, n_top = rows[0][1].logprobs, rows[0][1].top_logprobs
    if chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": t},
                    "logprobs": _chat_logprobs(engine, lps[i]) if want else None,
                    "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]
    else:
        per_prompt = len(rids) // len(prompt_lens)
        pre = [echo[i // per_prompt] if echo else ([], "", []) for i in range(len(rids))]
        choices = [{"index": i, "text": pre[i][1] + t, "finish_reason": r,
                    "logprobs": _completion_logprobs(engine, (pre[i][2] or []) + lps[i], n_top) if want else None}
                   for i, (t, r) in enumerate(zip(texts, reasons))]
    return {**meta, "choices": choices, "usage": usage(sum(prompt_lens), sum(counts))}


def _chat_logprobs(engine: Engine, events: list[Event]) -> dict[str, Any]:
    def entry(tok: int, lp: float) -> dict[str, Any]:
        text, b = token_piece(engine.tokenizer, tok)
        return {"token": text, "logprob": lp, "bytes": b}

    return {"content": [entry(ev.token, ev.logprob) | {"top_logprobs": [entry(t, v) for t, v in ev.top or []]}
                        for ev in events]}


def _completion_logprobs(engine: Engine, events: list[Event], n_top: int, offset: int = 0) -> dict[str, Any]:
    """OpenAI's legacy shape; `offset`: characters of the completion before these tokens (streaming)."""
    tokens = [token_piece(engine.tokenizer, ev.token)[0] for ev in events]
    offsets = list(itertools.accumulate((len(t) for t in tokens), initial=offset))[:-1]
    top = [None if ev.top is None else {token_piece(engine.tokenizer, t)[0]: v for t, v in ev.top}
           for ev in events] if n_top else None
    return {"tokens": tokens, "token_logprobs": [ev.logprob for ev in events], "top_logprobs": top,
            "text_offset": offsets}


async def _stream(engine: Engine, queue: asyncio.Queue, rids: list[int], index: dict[int, int], meta: dict,
                  chat: bool, prompt_tokens: int, include_usage: bool, lp_spec: tuple[bool, int] = (False, 0)
                  ) -> AsyncIterator[str]:
    """Server-sent events; with log-probs each chunk carries those of the tokens it covers (a token whose
    text is held back, e.g. a possible stop string, still reports its log-prob in the chunk it arrives in)."""
    meta = {**meta, "object": "chat.completion.chunk" if chat else "text_completion"}
    want_lp, n_top = lp_spec
    offsets = [0] * len(rids)  # completions' text_offset: characters of token pieces sent so far

    def chunk(i: int, text: str | None, finish: str | None, events: list[Event] = (), role: bool = False) -> str:
        lp = None
        if want_lp and events:
            if chat:
                lp = _chat_logprobs(engine, list(events))
            else:
                lp = _completion_logprobs(engine, list(events), n_top, offsets[i])
                offsets[i] += sum(len(t) for t in lp["tokens"])
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}
        else:
            choice = {"index": i, "text": text or "", "logprobs": lp, "finish_reason": finish}
        return f"data: {json.dumps({**meta, 'choices': [choice]})}\n\n"

    left, completion = len(rids), 0
    try:
        if chat:
            for i in range(len(rids)):
                yield chunk(i, None, None, role=True)
        failed = False
        while left and not failed:
            # Everything already waiting goes out together, one chunk per choice: when the client or
            # the event loop falls behind the decoder, fewer, larger chunks let it catch up.
            evs = [await queue.get()]
            while not queue.empty():
                evs.append(queue.get_nowait())
            texts: dict[int, tuple[str, list[Event]]] = {}
            out = []
            for ev in evs:
                if isinstance(ev, Exception):
                    err = APIError(500, f"generation failed: {ev}", type="server_error")
                    out.append(f"data: {json.dumps(err.body())}\n\n")
                    failed = True
                    break
                assert isinstance(ev, Event)
                completion += 1
                i = index[ev.rid]
                t, es = texts.get(i, ("", []))
                texts[i] = (t + ev.text, es + [ev] if want_lp else es)
                if ev.finish:
                    left -= 1
                    t, es = texts.pop(i)
                    out.append(chunk(i, t, ev.finish, es))
            out[:0] = [chunk(i, t, None, es) for i, (t, es) in texts.items() if t or es]
            for c in out:
                yield c
        if include_usage and not left:
            yield f"data: {json.dumps({**meta, 'choices': [], 'usage': usage(prompt_tokens, completion)})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if left:  # the client went away (or an error): free the slots
            engine.cancel(rids)
