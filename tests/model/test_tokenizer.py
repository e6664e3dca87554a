"""Tokenizer: LLaMA's settings, exact round trips, the Llama 2 chat format and its loss masks."""

import pytest

from llamaforge.errors import UserError
from llamaforge.tokenizer import Tokenizer, train_tokenizer

TEXTS = [
    "Hello world",
    "  two leading spaces and trailing  ",
    "tabs\tand\nnew\n\nlines\r\n",
    "emoji 😀🚀 and CJK 日本語 中文 한국어",
    "control \x00\x01\x07\x1b[0m chars",
    "def f(x: int) -> int:\n    return x ** 2  # 1234567890\n",
    "",
    "ünïcödé Ω ≈ ∑",
]


def test_special_ids_as_meta(tokenizer):
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (1, 2, -1)
    assert tokenizer.n_words == 1000


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer.encode(text, bos=True, eos=True)
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
    assert tokenizer.decode(ids) == text


def test_literal_sentencepiece_space_decodes_as_space(tokenizer):
    # Documented exception: U+2581 is SentencePiece's own space symbol.
    assert tokenizer.decode(tokenizer.encode("a\u2581b")) == "a b"


def test_digits_are_split(tokenizer):
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode("12345", bos=False)]
    assert [p.strip("\u2581") for p in pieces if p.strip("\u2581")] == list("12345")


def test_byte_fallback_for_unseen_characters(tokenizer):
    ids = tokenizer.encode("𓀀", bos=False)  # an Egyptian hieroglyph, surely not in stdlib sources
    assert any(tokenizer.id_to_piece(i).startswith("<0x") for i in ids)
    assert tokenizer.decode(ids) == "𓀀"


def test_chat_format_matches_llama2_template(tokenizer):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Sum 2 and 2"},
        {"role": "assistant", "content": "4"},
    ]
    ids, mask = tokenizer.encode_dialog(msgs)
    assert len(ids) == len(mask)
    expected = (tokenizer.encode("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]")
                + tokenizer.encode("Hello. ", bos=False, eos=True)
                + tokenizer.encode("[INST] Sum 2 and 2 [/INST]")
                + tokenizer.encode("4 ", bos=False, eos=True))
    assert ids == expected
    # The mask covers exactly the answers and their eos.
    trained = [i for i, m in zip(ids, mask) if m]
    assert trained == tokenizer.encode("Hello. ", bos=False, eos=True) + tokenizer.encode("4 ", bos=False, eos=True)
    assert sum(1 for i, m in zip(ids, mask) if m and i == tokenizer.eos_id) == 2


def test_train_false_zeroes_an_answer(tokenizer):
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "train": False},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    ids, mask = tokenizer.encode_dialog(msgs)
    trained = [i for i, m in zip(ids, mask) if m]
    assert trained == tokenizer.encode("d ", bos=False, eos=True)


def test_chat_prompt_ends_with_inst(tokenizer):
    ids = tokenizer.encode_chat_prompt([{"role": "user", "content": "Hi"}])
    assert tokenizer.decode(ids).endswith("[/INST]")


@pytest.mark.parametrize("msgs,match", [
    ([], "non-empty"),
    ([{"role": "assistant", "content": "x"}], "'user' was expected"),
    ([{"role": "user", "content": "x"}, {"role": "user", "content": "y"}], "message 1"),
    ([{"role": "user", "content": "  "}], "empty content"),
    ([{"role": "bot", "content": "x"}], "roles are"),
    ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], "message 1"),
])
def test_bad_dialogs_are_named(tokenizer, msgs, match):
    with pytest.raises(UserError, match=match):
        tokenizer.encode_dialog(msgs, where="data.jsonl:7")


def test_train_cli_and_bad_file(tmp_path, corpus_files):
    from llamaforge.cli import main

    assert main(["tokenizer", "train", *map(str, corpus_files[:20]), "--vocab-size", "600",
                 "--out", str(tmp_path / "t")]) == 0
    tok = Tokenizer(tmp_path / "t")
    assert tok.n_words == 600
    assert (tmp_path / "t" / "manifest.json").is_file()
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a SentencePiece model"):
        Tokenizer(tmp_path / "junk.model")


def test_train_from_strings(tmp_path):
    texts = [f"line {i} with some words and numbers {i * 7}" for i in range(2000)]
    tok = Tokenizer(train_tokenizer(texts, 300, tmp_path))
    assert tok.decode(tok.encode(texts[5])) == texts[5]
