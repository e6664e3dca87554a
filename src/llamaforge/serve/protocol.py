"""Request bodies of the OpenAI API subset we serve, and OpenAI-shaped errors.

Strict types (a string where a number belongs is a 400, not a silent coercion); unknown fields
are accepted and ignored, as clients send options we do not implement (user, logit_bias, ...).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class APIError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)  # extension (vLLM): 0 disables
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False  # extension (vLLM): decode max_tokens tokens (benchmarks)

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise APIError(400, "'stop' must be a non-empty string or a list of up to 4 non-empty strings",
                           param="stop")
        return stops

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]  # text, or token ids used as given (no bos added)
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=5)  # 0: the sampled tokens' log-probs only
    echo: bool = False  # the prompt comes back before the completion (and its tokens' log-probs)

    def prompt_list(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str) or (p and all(isinstance(x, int) for x in p)):
            p = [p]
        if not p or any(not x for x in p):
            raise APIError(400, "'prompt' must be a non-empty string or token list, or a list of them",
                           param="prompt")
        if self.echo and self.stream:
            raise APIError(400, "echo with stream=true is not supported", param="echo")
        return list(p)


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


def wants_logprobs(body: CompletionRequest | ChatRequest) -> tuple[bool, int]:
    """(log-probs of the sampled tokens wanted, how many alternatives per token): chat `logprobs` and
    `top_logprobs` (0-20), completions `logprobs` (0-5: the sampled token's log-prob plus that many
    alternatives)."""
    if isinstance(body, ChatRequest):
        if body.top_logprobs and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        return body.logprobs, (body.top_logprobs or 0) if body.logprobs else 0
    return body.logprobs is not None, body.logprobs or 0


def token_piece(tokenizer, token: int) -> tuple[str, list[int]]:
    """A token's text and UTF-8 bytes (SentencePiece's U+2581 is a space, <0xHH> pieces a raw byte)."""
    piece = tokenizer.id_to_piece(token)
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        b = [int(piece[3:5], 16)]
        return bytes(b).decode("utf-8", errors="replace"), b
    text = piece.replace("\u2581", " ")
    return text, list(text.encode("utf-8"))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
