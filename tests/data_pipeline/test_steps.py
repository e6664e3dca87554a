"""Each step on its own: normalization, PII, blocklist, quality rules, boilerplate, near-dups,
language and toxicity (batched)."""

from __future__ import annotations

import numpy as np
import pytest

from llamaforge.data.clean import dedup, privacy, quality, toxicity
from llamaforge.data.clean.config import NearDupConfig, NormalizeConfig, QualityConfig
from llamaforge.data.clean.normalize import fix_mojibake, line_key, normalize_text
from llamaforge.data.clean.synth import ProseGenerator, near_copy


def test_normalize_nfc_controls_whitespace():
    cfg = NormalizeConfig()
    raw = "Cafe\u0301\x00 \u200bbar\u00a0\u00a0baz  \r\n\r\n\r\n\r\nnext\t line  "
    assert normalize_text(raw, cfg) == "Caf\u00e9 bar baz\n\nnext line"
    assert normalize_text(raw, NormalizeConfig(enabled=False)) == raw


def test_mojibake_repair_only_when_it_decodes():
    assert fix_mojibake("It\u00e2\u20ac\u2122s a caf\u00c3\u00a9") == "It\u2019s a caf\u00e9"
    assert fix_mojibake("na\u00efve d\u00e9j\u00e0 vu \u00e9\u00e0") == "na\u00efve d\u00e9j\u00e0 vu \u00e9\u00e0"


def test_line_key_is_ccnet_normalization():
    assert line_key("Copyright \u00a9 2023 Acme, Inc.") == line_key("copyright 1999 ACME inc")


@pytest.mark.parametrize("text, kind, placeholder", [
    ("mail me at john.doe+x@mail.example.co.uk today", "email", "<EMAIL>"),
    ("call (415) 555-0142 now", "phone", "<PHONE>"),
    ("call +44 20 7946 0958 now", "phone", "<PHONE>"),
    ("host 192.168.10.200 is up", "ip", "<IP_ADDRESS>"),
    ("host 2001:db8:85a3::8a2e:370:7334 is up", "ip", "<IP_ADDRESS>"),
    ("card 4111-1111-1111-1111 used", "credit_card", "<CREDIT_CARD>"),
    ("card 5500 0000 0000 0004 used", "credit_card", "<CREDIT_CARD>"),
])
def test_pii_scrubbed_with_typed_placeholder(text, kind, placeholder):
    out, counts = privacy.scrub(text, ["email", "phone", "ip", "credit_card"])
    assert counts == {kind: 1} and placeholder in out


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails Luhn", "in 2023 we sold 1,234,567 units", "version 1.2.3 at 12:30:45",
    "ISBN 978-3-16-148410-0", "call extension 12345",
])
def test_no_pii_false_positives(text):
    assert privacy.scrub(text, ["email", "phone", "ip", "credit_card"]) == (text, {})


def test_luhn():
    assert privacy.luhn_ok("79927398713") and not privacy.luhn_ok("79927398710")


def test_blocklist_matches_subdomains_and_reports_bad_lines(tmp_path):
    p = tmp_path / "bl.txt"
    p.write_text("# comment\nbad.example.com\nhttps://www.evil.org/path\n")
    bl = privacy.load_blocklist(p)
    assert bl == {"bad.example.com", "evil.org"}
    assert privacy.blocked(privacy.host_of("https://WWW.a.bad.example.com/x"), bl) == "bad.example.com"
    assert privacy.blocked(privacy.host_of("https://notbad.example.com/"), bl) is None
    assert privacy.blocked_url_in_text("see http://evil.org/x.", bl) == "evil.org"
    p.write_text("ok.com\nnot a domain\n")
    with pytest.raises(Exception, match=r"bl\.txt:2"):
        privacy.load_blocklist(p)


def test_quality_passes_prose_and_names_failed_rules():
    cfg = QualityConfig()
    gen = ProseGenerator(3)
    docs = [gen.document(3, 8) for _ in range(50)]
    assert [quality.failed_rules(d, cfg) for d in docs] == [[]] * 50
    assert "min_words" in quality.failed_rules("Too short to keep.", cfg)
    soup = " ".join(["### $$$ %% @@"] * 40)
    fails = set(quality.failed_rules(soup, cfg))
    assert {"max_symbol_word_ratio", "min_alpha_word_fraction", "min_stop_words"} <= fails
    rep = "\n".join([gen.sentence()] * 30)
    assert {"max_dup_line_fraction", "dup_5gram_fraction"} <= set(quality.failed_rules(rep, cfg))
    assert "lorem_ipsum" in quality.failed_rules(docs[0] + "\nLorem ipsum dolor sit amet.", cfg)
    assert quality.failed_rules("Too short.", QualityConfig(min_words=0, min_stop_words=0)) == []


def test_repetition_fractions():
    words = "a b c d e a b c d e x".split()
    rep = quality.repetition(words, top_ns=(2,), dup_ns=(5,))
    assert rep["dup_5gram"] == pytest.approx(5 / 11)  # the second "a b c d e" is covered
    assert rep["top_2gram"] == pytest.approx(4 / 11)  # "a b" twice, 2 chars each


def test_boilerplate_counting_is_by_distinct_documents(tmp_path):
    counter = dedup.LineCounter(tmp_path, buffer_hashes=4)  # tiny buffer: exercises the spill
    docs = [f"unique line about {w} here\nShare this article on social media!\nShare this article on social media!"
            for w in ("apples", "boats", "clouds")] + ["Only twice: this line is repeated.\nx"] * 2
    for d in docs:
        counter.add(dedup.unique_line_hashes(d, 10))
    frequent, stats = counter.frequent(3)
    assert stats["boilerplate_lines"] == 1
    text, n = dedup.remove_boilerplate(docs[0], frequent, 10)
    assert text == "unique line about apples here" and n == 2
    # digits are folded (CCNet): "page 1 of 9" and "page 2 of 9" are the same line
    assert line_key("Page 1 of 9") == line_key("page 2 of 9")


def test_near_duplicates_found_and_different_docs_not():
    from llamaforge.data.clean.neardup import NearDupIndex, Signer

    cfg = NearDupConfig()
    signer, index = Signer(cfg), NearDupIndex(cfg)
    gen = ProseGenerator(5)
    import random

    docs = [gen.document(4, 8) for _ in range(30)]
    rng = random.Random(0)
    for i, d in enumerate(docs):
        assert index.check(i, signer.signature(d)) == (-1, 0.0)
    rep, sim = index.check(100, signer.signature(near_copy(docs[7], rng, 3)))
    assert rep == 7 and sim >= cfg.threshold
    assert index.check(101, signer.signature(gen.document(4, 8)))[0] == -1
    assert index.cluster_stats()["clusters"] == 1 and index.memory_bytes() > 0
    assert signer.signature("") is None
    from datasketch import MinHash

    from llamaforge.data.clean.neardup import shingle_hashes

    for d in docs[:3] + [" ".join(docs) * 3]:  # equal to datasketch's own update_batch (long: chunked)
        ref = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=int, scheme="affine32")
        ref.update_batch(shingle_hashes(d, cfg.shingle_words).tolist())
        assert np.array_equal(signer.signature(d), ref.hashvalues)


def test_language_matches_langid_normalised_probabilities():
    from langid.langid import LanguageIdentifier, model

    from llamaforge.data.clean.language import classify, identifier

    ref = LanguageIdentifier.from_modelstring(model, norm_probs=True) if identifier() is None else identifier()
    for text in ("The cat sat on the mat and looked at the birds.", "Le chat est assis sur le tapis.",
                 "Der Hund schläft im Garten unter dem Baum."):
        lang, p = classify(text)
        want = ref.classify(text)
        assert lang == want[0] and p == pytest.approx(want[1], abs=1e-6)


def test_toxicity_is_line_mean_and_batched(monkeypatch):
    import profanity_check

    calls = []
    real = profanity_check.predict_prob

    def spy(texts):
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(profanity_check, "predict_prob", spy)
    docs = ["you are a fucking idiot\nthe weather is nice today", "we walked in the park", ""]
    scores = toxicity.score_documents(docs, batch_lines=100)
    assert calls == [3]  # one call for all lines of all documents
    per_line = real(["you are a fucking idiot", "the weather is nice today", "we walked in the park"])
    assert scores[0] == pytest.approx(np.mean(per_line[:2])) and scores[1] == pytest.approx(per_line[2])
    assert scores[2] == 0.0 and scores[0] > 0.5 > scores[1]
