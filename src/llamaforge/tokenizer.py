"""SentencePiece BPE with LLaMA's settings, and the Llama 2 chat format with loss masks.

`Tokenizer` mirrors Meta's reference (bos_id, eos_id, pad_id, n_words, encode, decode) and loads a
Meta `tokenizer.model` as is. Round trips are exact for any text (byte fallback, identity
normalisation, no whitespace folding), except that SentencePiece uses U+2581 ("▁") as its
space symbol, so a literal U+2581 in the input decodes as a plain space.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

from llamaforge.errors import UserError
from llamaforge.io import atomic_file, write_manifest

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
ROLES = ("system", "user", "assistant")


class Tokenizer:
    def __init__(self, path: str | Path | None = None, model_proto: bytes | None = None):
        if (path is None) == (model_proto is None):
            raise ValueError("give exactly one of path or model_proto")
        if path is not None:
            path = Path(path)
            if path.is_dir():
                path = path / "tokenizer.model"
            if not path.is_file():
                raise UserError(f"tokenizer {path} not found; train one with `llamaforge tokenizer train`")
            model_proto = path.read_bytes()
        self.path = path
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except Exception as e:  # sentencepiece raises a bare RuntimeError/OSError
            raise UserError(f"{path or 'tokenizer'}: not a SentencePiece model ({e})") from None
        self.n_words: int = self.sp.vocab_size()
        self.bos_id: int = self.sp.bos_id()
        self.eos_id: int = self.sp.eos_id()
        self.pad_id: int = self.sp.pad_id()  # -1 in LLaMA's models: no pad piece

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids = self.sp.encode(text)
        if bos:
            ids = [self.bos_id, *ids]
        if eos:
            ids = [*ids, self.eos_id]
        return ids

    def encode_batch(self, texts: list[str], bos: bool = True, eos: bool = False) -> list[list[int]]:
        out = self.sp.encode(texts)
        return [([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else []) for ids in out]

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def save(self, directory: str | Path) -> Path:
        out = Path(directory) / "tokenizer.model"
        with atomic_file(out, "wb") as f:
            f.write(self.model_proto)
        return out

    # -- Llama 2 chat format ----------------------------------------------------------------------
    def encode_dialog(self, messages: list[dict], where: str = "dialog") -> tuple[list[int], list[int]]:
        """Llama 2 chat encoding of a dialogue; returns (ids, loss mask).

        `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s><s>[INST] ...`
        The mask is 1 on assistant answer tokens and their eos, 0 elsewhere; an assistant message
        with `"train": false` gets 0 (Ghost Attention zeroes earlier turns this way). A dialogue
        ending with a user message ends with `[/INST]`: the prompt for generation.
        """
        msgs = validate_dialog(messages, where)
        system = None
        if msgs[0]["role"] == "system":
            system, msgs = msgs[0]["content"], msgs[1:]
        ids: list[int] = []
        mask: list[int] = []
        for i in range(0, len(msgs), 2):
            user = msgs[i]["content"].strip()
            if i == 0 and system is not None:
                user = f"{B_SYS}{system.strip()}{E_SYS}{user}"
            prompt = self.encode(f"{B_INST} {user} {E_INST}", bos=True, eos=False)
            ids += prompt
            mask += [0] * len(prompt)
            if i + 1 < len(msgs):
                answer_msg = msgs[i + 1]
                answer = self.encode(f"{answer_msg['content'].strip()} ", bos=False, eos=True)
                ids += answer
                mask += [int(answer_msg.get("train", True))] * len(answer)
        return ids, mask

    def encode_chat_prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of a dialogue that ends with a user message, ready for generation."""
        if not messages or messages[-1].get("role") != "user":
            raise UserError("a chat prompt must end with a user message")
        return self.encode_dialog(messages)[0]


def validate_dialog(messages: list[dict], where: str = "dialog") -> list[dict]:
    """System optional and first, then user/assistant alternating from a user; no empty content."""
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: 'messages' must be a non-empty list")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise UserError(f"{where}: message {j} must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise UserError(f"{where}: message {j} has role {m['role']!r}; roles are system, user, assistant")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise UserError(f"{where}: message {j} ({m['role']}) has empty content")
    start = 1 if messages[0]["role"] == "system" else 0
    for j, m in enumerate(messages[start:], start):
        expected = "user" if (j - start) % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise UserError(
                f"{where}: message {j} has role {m['role']!r} where {expected!r} was expected "
                "(system first if present, then user and assistant alternating, starting with user)"
            )
    if start == len(messages):
        raise UserError(f"{where}: a dialogue needs at least one user message")
    return messages


# -- training ----------------------------------------------------------------------------------
def _lines(texts: Iterable[str], max_bytes: int = 4096) -> Iterator[str]:
    """SentencePiece trains on sentences; feed it lines (long ones cut), skipping blank ones."""
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                yield line[:max_bytes]


def _read_inputs(inputs: list[str | Path], text_field: str = "text") -> Iterator[str]:
    for p in map(Path, inputs):
        if p.suffix == ".txt" or p.suffix == ".py" or p.suffix == "":
            try:
                yield p.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{p}: not valid UTF-8 at byte {e.start}") from None
        else:
            from llamaforge.data.sources import iter_documents

            for doc in iter_documents(p, text_field=text_field):
                yield doc.text


def _is_path(x: object) -> bool:
    """A Path, or a string naming an existing file (text samples are never taken for paths)."""
    if isinstance(x, Path):
        return True
    if not isinstance(x, str) or "\n" in x or len(x) > 4096:
        return False
    try:
        return Path(x).is_file()
    except OSError:
        return False


def train_tokenizer(
    inputs: Iterable[str] | list[str | Path],
    vocab_size: int,
    out_dir: str | Path,
    *,
    input_sentence_size: int = 2_000_000,
    seed_sentencepiece_size: int = 1_000_000,
    num_threads: int = 2,
    user_defined_symbols: list[str] | None = None,
) -> Path:
    """Train a BPE tokenizer with LLaMA's settings; write out_dir/tokenizer.model atomically.

    `inputs`: file paths (.txt, .jsonl, .jsonl.gz/.zst, .parquet) or an iterable of strings.
    Settings (LLaMA 2.1): BPE, digits split, byte fallback, identity normalisation, whitespace kept;
    unk=0, bos=1, eos=2, no pad piece, as Meta's tokenizer.
    """
    inputs = list(inputs) if not isinstance(inputs, Iterator) else inputs
    if isinstance(inputs, list) and inputs and _is_path(inputs[0]):
        texts: Iterable[str] = _read_inputs(inputs)  # type: ignore[arg-type]
    else:
        texts = inputs  # type: ignore[assignment]
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_lines(texts),
            model_writer=buf,
            model_type="bpe",
            vocab_size=vocab_size,
            split_digits=True,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            character_coverage=0.99995,
            input_sentence_size=input_sentence_size,
            seed_sentencepiece_size=seed_sentencepiece_size,
            shuffle_input_sentence=True,
            max_sentence_length=16384,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            num_threads=num_threads,
            user_defined_symbols=user_defined_symbols or [],
            minloglevel=2,
        )
    except RuntimeError as e:
        raise UserError(f"tokenizer training failed: {e} (is the corpus large enough for vocab {vocab_size}?)"
                        ) from None
    out = Path(out_dir) / "tokenizer.model"
    with atomic_file(out, "wb") as f:
        f.write(buf.getvalue())
    return out


def cli_train(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="llamaforge tokenizer train",
        description="Train a SentencePiece BPE tokenizer with LLaMA's settings (split digits, byte fallback).",
        epilog="example: llamaforge tokenizer train corpus/*.txt --vocab-size 8000 --out tok/",
    )
    p.add_argument("inputs", nargs="+", help="text files (.txt, .jsonl, .jsonl.gz, .jsonl.zst, .parquet) or dirs")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--out", required=True, help="output directory (gets tokenizer.model)")
    p.add_argument("--input-sentence-size", type=int, default=2_000_000, help="lines sampled for training")
    args = p.parse_args(argv)
    t0 = time.time()
    files: list[Path] = []
    for x in args.inputs:
        path = Path(x)
        if path.is_dir():
            files += sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"input {x} not found")
    out = train_tokenizer(files, args.vocab_size, args.out, input_sentence_size=args.input_sentence_size)
    tok = Tokenizer(out)
    write_manifest(args.out, "tokenizer train", {"vocab_size": args.vocab_size}, files[:1000], time.time() - t0,
                   n_words=tok.n_words)
    print(f"wrote {out} ({tok.n_words} pieces) in {time.time() - t0:.1f}s")
    return 0
