"""Synthetic corpora for tests, benchmarks and demos: varied English-like prose (real function words
and a Zipfian vocabulary of real and made-up content words in sentence templates, so documents
never repeat by chance), and planted items each cleaning step must catch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

NOUNS = ("time year people way day man woman child world life hand part place case week company system program "
         "question work government number night point home water room mother area money story fact month lot "
         "right study book eye job word business issue side kind head house service friend father power hour "
         "game line end member law car city community name president team minute idea kid body information "
         "school face others level office door health person art war history party result change morning "
         "reason research girl guy moment air teacher force education river garden market village engine "
         "bridge island letter forest window report museum kitchen harvest winter summer journey mountain").split()
VERBS = ("builds carries changes describes explains follows gathers holds improves joins keeps leads moves opens "
         "prepares reaches remembers shows studies supports teaches turns understands visits watches writes "
         "finds gives makes takes brings considers creates develops expects includes offers provides").split()
ADJS = ("new good high old great big small large local social important national young different early "
        "public bad able political real best strong whole free military true federal full special easy clear "
        "recent certain personal open red difficult available likely short single medical current wrong "
        "private past foreign fine common poor natural significant similar hot dead central happy serious "
        "ready simple left physical general environmental financial blue democratic dark various entire").split()
ADVS = "quickly slowly often rarely carefully quietly clearly simply usually finally recently always".split()
PREPS = "in on at with from into during across under over through between near behind after before".split()
DETS = "the a this that every each one another some their our his her its".split()
SUBJ = "he she they we i you it".split()
CONJ = ("and", "but", "because", "while", "although", "so", "when", "after", "before", "since")
_SYL = ("ba be bi bo bu da de di do ka ke ki lo lu ma me mi no nu ra re ri ro sa se si so ta te ti "
        "tra vel ven dor").split()

FRENCH = ("Le village se trouve au bord de la rivière et les habitants travaillent dans les champs. "
          "Nous avons passé la journée à visiter le musée avec nos amis de l'école. "
          "Il faut que le gouvernement prenne des mesures pour protéger l'environnement. "
          "Elle a écrit une lettre à sa mère pour lui raconter son voyage en montagne. "
          "Les enfants jouent dans le jardin pendant que les parents préparent le repas. ")
GERMAN = ("Das Dorf liegt am Ufer des Flusses und die Menschen arbeiten auf den Feldern. "
          "Wir haben den ganzen Tag im Museum verbracht und viele Bilder gesehen. "
          "Die Regierung muss neue Gesetze für den Schutz der Umwelt beschließen. "
          "Sie schrieb ihrer Mutter einen langen Brief über die Reise in die Berge. "
          "Die Kinder spielen im Garten, während die Eltern das Essen vorbereiten. ")
SPANISH = ("El pueblo está a la orilla del río y la gente trabaja en los campos. "
           "Pasamos todo el día en el museo con nuestros amigos de la escuela. "
           "El gobierno debe tomar medidas para proteger el medio ambiente. "
           "Ella escribió una carta a su madre para contarle su viaje a la montaña. "
           "Los niños juegan en el jardín mientras los padres preparan la comida. ")
TOXIC_LINES = ("You are a fucking idiot and everybody hates you.", "Shut up, you stupid bitch.",
               "This shit is fucking garbage, you worthless asshole.", "Go to hell, you dumb fuck.")
BOILERPLATE = "Subscribe to our newsletter for the latest news, offers and updates from our team."


class ProseGenerator:
    """Random English-like documents: paragraphs (one per line) of templated sentences."""

    def __init__(self, seed: int = 0, vocab: int = 20_000):
        self.rng = random.Random(seed)
        made = sorted({self._pseudo() for _ in range(vocab)})
        self.rng.shuffle(made)
        self.rare = made
        # Zipf-like: a word's weight falls as 1/rank
        self.rare_w = [1.0 / (i + 1) for i in range(len(self.rare))]
        self.rare_cum = list(self._cum(self.rare_w))

    @staticmethod
    def _cum(w):
        t = 0.0
        for x in w:
            t += x
            yield t

    def _pseudo(self) -> str:
        return "".join(self.rng.choice(_SYL) for _ in range(self.rng.randint(2, 4)))

    def _noun(self) -> str:
        r = self.rng
        if r.random() < 0.35:
            return r.choices(self.rare, cum_weights=self.rare_cum)[0]
        return r.choice(NOUNS)

    def _phrase(self) -> str:
        r = self.rng
        adj = f"{r.choice(ADJS)} " if r.random() < 0.5 else ""
        return f"{r.choice(DETS)} {adj}{self._noun()}"

    def sentence(self) -> str:
        r = self.rng
        subj = r.choice(SUBJ) if r.random() < 0.3 else self._phrase()
        parts = [subj, r.choice(VERBS), self._phrase()]
        if r.random() < 0.6:
            parts += [r.choice(PREPS), self._phrase()]
        if r.random() < 0.25:
            parts.insert(1, r.choice(ADVS))
        if r.random() < 0.35:
            parts += [r.choice(CONJ), r.choice(SUBJ), r.choice(VERBS), self._phrase()]
        s = " ".join(parts)
        s = s[0].upper() + s[1:]
        return s + r.choice((".", ".", ".", "!", "?"))

    def paragraph(self, sentences: int) -> str:
        return " ".join(self.sentence() for _ in range(sentences))

    def document(self, min_paras: int = 2, max_paras: int = 8) -> str:
        r = self.rng
        return "\n".join(self.paragraph(r.randint(2, 6)) for _ in range(r.randint(min_paras, max_paras)))


def _foreign(rng: random.Random, text: str, n: int = 12) -> str:
    sents = [s.strip() + "." for s in text.split(".") if s.strip()]
    return "\n".join(" ".join(rng.choice(sents) for _ in range(3)) for _ in range(n // 3))


def near_copy(text: str, rng: random.Random, changes: int = 3) -> str:
    """The same text with `changes` words replaced."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), changes):
        words[i] = "changed"
    return " ".join(words)


def planted_corpus(n_clean: int = 200, seed: int = 0) -> tuple[list[dict], dict[str, list]]:
    """Records with `kind` set (clean, exact_dup, near_dup, foreign, toxic, pii_dense, pii_light,
    blocked, junk_symbols, junk_repeated, boilerplate), and the ids of each kind."""
    gen = ProseGenerator(seed)
    rng = random.Random(seed + 1)
    recs: list[dict] = []
    kinds: dict[str, list] = {}

    def add(kind: str, text: str, url: str | None = None) -> dict:
        rec = {"text": text, "id": f"{kind}-{len(kinds.get(kind, []))}", "kind": kind,
               "url": url or f"https://site{rng.randint(0, 999)}.example.com/{len(recs)}"}
        recs.append(rec)
        kinds.setdefault(kind, []).append(rec["id"])
        return rec

    clean = [add("clean", gen.document(3, 8)) for _ in range(n_clean)]
    for c in clean[:10]:  # boilerplate line appended to otherwise clean documents
        c["text"] += "\n" + BOILERPLATE
        c["kind"] = "boilerplate"
        kinds["clean"].remove(c["id"])
        kinds.setdefault("boilerplate", []).append(c["id"])
    for c in clean[20:25]:
        add("exact_dup", "  " + c["text"].upper().replace(" ", "  ") + "\n")
    for c in clean[30:35]:
        add("near_dup", near_copy(c["text"], rng))
    for lang_text in (FRENCH, GERMAN, SPANISH):
        add("foreign", _foreign(rng, lang_text))
    for _ in range(4):
        # toxic lines made unique, so that they are not also boilerplate (repeated across documents)
        lines = [gen.paragraph(2) for _ in range(2)] + [f"{t} And {gen._phrase()}." for t in TOXIC_LINES]
        add("toxic", "\n".join(lines))
    for _ in range(3):
        rows = [f"{gen.sentence()} Reach {gen._noun()} at {gen._noun()}{i}@mail{i}.example.org or "
                f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}." for i in range(25)]
        add("pii_dense", "\n".join(rows))
    for _ in range(3):
        add("pii_light", gen.document(3, 5) + f"\nWrite to {gen._noun()}.roe@example.com or call "
            f"+1 415 555 {rng.randint(1000, 9999)} for the details about {gen._phrase()}.")
    for _ in range(3):
        add("blocked", gen.document(3, 6), url=f"https://www.people-search.example.com/person/{rng.randint(1, 99999)}")
    symbols = ["###", "$$$", "%%", "@@", "&&&", "|||", "^^"]
    add("junk_symbols", "\n".join(" ".join(rng.choice(symbols) for _ in range(30))
                                  for _ in range(6)))
    line = gen.sentence()
    add("junk_repeated", "\n".join([line] * 40))
    rng.shuffle(recs[n_clean:])  # planted items after the clean ones (so a cluster's first is clean)
    return recs, kinds


def write_jsonl(path: str | Path, records: list[dict], malformed_at: int | None = None) -> int | None:
    """Write records; with `malformed_at`, put a broken JSON line there and return its 1-based number."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for i, rec in enumerate(records):
            if malformed_at is not None and i == malformed_at:
                f.write('{"text": "this line is broken", "id": \n')
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return None if malformed_at is None else malformed_at + 1


def prose_records(target_bytes: int, seed: int = 0, junk_fraction: float = 0.02) -> Iterator[dict]:
    """English-like documents up to about target_bytes of text, with a small share of planted
    junk (exact and near copies of earlier documents, symbol soup, repeated lines, toxic and
    PII-dense documents): a benchmark corpus."""
    gen = ProseGenerator(seed)
    rng = random.Random(seed + 7)
    total = 0
    i = 0
    recent: list[str] = []
    while total < target_bytes:
        if rng.random() < junk_fraction and recent:
            kind = rng.choice(("exact", "near", "symbols", "repeated", "toxic", "pii"))
            if kind == "exact":
                text = rng.choice(recent)
            elif kind == "near":
                text = near_copy(rng.choice(recent), rng, 3)
            elif kind == "symbols":
                text = " ".join(rng.choice(["###", "$$$", "%%", "@@"]) for _ in range(200))
            elif kind == "repeated":
                text = "\n".join([gen.sentence()] * 30)
            elif kind == "toxic":  # lines made unique, or they would also be boilerplate
                text = gen.paragraph(3) + "\n" + "\n".join(f"{t} And {gen._phrase()}." for t in TOXIC_LINES)
            else:
                text = "\n".join(f"{gen.sentence()} Reach {gen._noun()} at {gen._noun()}{j}@example.org or "
                                 f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}."
                                 for j in range(20))
        else:
            text = gen.document(2, 10)
            recent = (recent + [text])[-100:]
        total += len(text)
        yield {"text": text, "id": i, "url": f"https://site{rng.randint(0, 99999)}.example.com/page/{i}"}
        i += 1
