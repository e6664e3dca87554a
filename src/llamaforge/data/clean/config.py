"""The `data clean` config: one typed section per step (TOML file + `--section.key=value`).

Every filtering step has `enabled` and `action`: "drop" removes what fails, "annotate" keeps it
and adds a flag and the score to the record's annotations so the data can be studied first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llamaforge.errors import UserError

Action = Literal["drop", "annotate"]


@dataclass
class ReadConfig:
    text_field: str = "text"
    txt_mode: Literal["file", "blocks"] = "file"  # .txt: one document per file, or per blank-line block
    skip_bad: bool = False  # count and list malformed records instead of stopping
    batch_bytes: int = 1 << 20  # records are sent to workers in batches of about this many bytes


@dataclass
class NormalizeConfig:
    enabled: bool = True
    form: Literal["NFC", "NFKC", "none"] = "NFC"
    remove_control: bool = True  # C0/C1 controls, zero-width and BOM characters (keeps \n and \t)
    whitespace: bool = True  # unicode spaces to " ", runs collapsed, trailing spaces and 3+ newlines trimmed
    fix_mojibake: bool = False  # repair UTF-8 read as cp1252/latin-1 ("â€™" -> "’")


@dataclass
class DedupConfig:
    enabled: bool = True
    action: Action = "drop"
    boilerplate: bool = True  # remove lines repeated across many documents (CCNet)
    boilerplate_min_docs: int = 3  # a line in at least this many distinct documents is boilerplate
    boilerplate_min_chars: int = 10  # shorter normalized lines are never counted

    def validate(self) -> None:
        if self.boilerplate_min_docs < 2:
            raise UserError("dedup.boilerplate_min_docs must be >= 2")


@dataclass
class NearDupConfig:
    enabled: bool = True
    action: Action = "drop"
    threshold: float = 0.8  # Jaccard similarity of word-shingle sets
    num_perm: int = 128
    shingle_words: int = 5
    seed: int = 1
    verify: bool = True  # confirm LSH candidates by estimated Jaccard (costs 4*num_perm bytes per doc)

    def validate(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise UserError("neardup.threshold must be in (0, 1]")
        if self.num_perm < 16 or self.shingle_words < 1:
            raise UserError("neardup.num_perm must be >= 16 and neardup.shingle_words >= 1")


@dataclass
class LanguageConfig:
    enabled: bool = True
    action: Action = "drop"
    languages: list[str] = field(default_factory=lambda: ["en"])  # ISO 639-1 codes langid knows
    min_score: float = 0.5  # normalised probability, as Llama 2's threshold
    max_chars: int = 2000  # classify the first N characters


@dataclass
class QualityConfig:
    """Gopher (Rae et al. 2021) and C4 rules; set a bound to 0 (or an empty list) to turn it off."""

    enabled: bool = True
    action: Action = "drop"
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # ("#" + "..." + "…") per word
    min_alpha_word_fraction: float = 0.8  # words with at least one letter
    min_stop_words: int = 2  # occurrences of words from the shipped stop-word list
    min_line_punct_fraction: float = 0.12  # lines ending in terminal punctuation (FineWeb's C4 variant)
    max_bullet_line_fraction: float = 0.9
    max_ellipsis_line_fraction: float = 0.3
    max_dup_line_fraction: float = 0.3
    max_dup_line_char_fraction: float = 0.2
    max_dup_para_fraction: float = 0.3
    max_dup_para_char_fraction: float = 0.2
    top_ngram_max_fraction: list[float] = field(default_factory=lambda: [0.20, 0.18, 0.16])  # n = 2, 3, 4
    dup_ngram_max_fraction: list[float] = field(
        default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10])  # n = 5 .. 10
    lorem_ipsum: bool = True  # C4: drop placeholder text


@dataclass
class ToxicityConfig:
    enabled: bool = True
    action: Action = "annotate"  # Llama 2 chose not to filter on toxicity
    threshold: float = 0.5  # mean per-line probability at or above which a document is toxic
    batch_lines: int = 8192  # lines per classifier call


@dataclass
class PrivacyConfig:
    enabled: bool = True
    action: Action = "drop"  # for blocked domains and PII-dense documents
    blocklist: str | None = None  # file of domains (one per line, # comments); subdomains match too
    url_field: str = "url"
    scan_text_urls: bool = False  # also block documents whose text links to a blocked domain
    pii: list[str] = field(default_factory=lambda: ["email", "phone", "ip", "credit_card"])
    scrub: bool = True  # replace PII by typed placeholders (<EMAIL>, <PHONE>, <IP_ADDRESS>, <CREDIT_CARD>)
    max_pii_per_100_words: float = 5.0  # PII-dense documents (contact lists, dumps); 0 turns it off

    def validate(self) -> None:
        unknown = set(self.pii) - {"email", "phone", "ip", "credit_card"}
        if unknown:
            raise UserError(f"privacy.pii: unknown kinds {sorted(unknown)}; valid: email, phone, ip, credit_card")


@dataclass
class WriterConfig:
    shard_bytes: int = 256 << 20  # uncompressed JSONL bytes per shard (cut at a batch boundary)
    zstd_level: int = 3
    annotate: bool = True  # add scores (language, toxicity, PII counts, flags) to each record
    annotation_field: str = "annotations"
    provenance: bool = False  # add "source": "file:line" to each record


@dataclass
class CleanConfig:
    read: ReadConfig = field(default_factory=ReadConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    neardup: NearDupConfig = field(default_factory=NearDupConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    toxicity: ToxicityConfig = field(default_factory=ToxicityConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)


# The order in which steps see a document; a document dropped by one is counted there only.
STEPS = ("read", "normalize", "dedup", "neardup", "language", "quality", "toxicity", "privacy", "writer")
