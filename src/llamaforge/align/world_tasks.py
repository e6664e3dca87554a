"""Skill tasks of the alignment world: prompts, canonical answers, flawed answers and the checker.

Nine kinds with machine-checkable answers: add, sub, mul, reverse, count, upper, sort, last, larger.
Answers are short and regular ("12 + 7 is 19.") so that a 1-15M-parameter model can learn them. The
last two answer with an item of the prompt (the last word of a list, the larger of two numbers): a
rule that carries over to held-out items (new lists of familiar words, new pairs) for a model that
copies from its prompt, where the others need arithmetic or spelling. Which
operands and words belong to the evaluation split is fixed by a hash, independent of the seed, so
every world made with any seed keeps the same eval items out of training.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from importlib import resources
from typing import Any

SKILL_KINDS = ("add", "sub", "mul", "reverse", "count", "upper", "sort", "last", "larger")
ADD_MAX, SUB_MAX, MUL_MAX = 50, 50, 12  # operand ranges: sums stay <= 100, products <= 144
SORT_MAX, SORT_LEN = 50, (3, 5)
LARGER_MAX, LAST_LEN = 99, (3, 5)
EVAL_SHARE = 5  # one item in five goes to the eval split

PROMPTS: dict[str, tuple[str, ...]] = {
    "add": ("What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}.",
            "Calculate the sum of {a} and {b}."),
    "sub": ("What is {a} - {b}?", "What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}.",
            "Take {b} away from {a}."),
    "mul": ("What is {a} * {b}?", "What is {a} times {b}?", "Multiply {a} by {b}.",
            "Compute the product of {a} and {b}."),
    "reverse": ("Reverse the word {word}.", "Spell {word} backwards.", "What is {word} written backwards?",
                "Write the word {word} in reverse."),
    "count": ("How many times does the letter {letter} appear in {word}?", "Count the letter {letter} in {word}.",
              "How many {letter}'s are in the word {word}?"),
    "upper": ("Write {word} in upper case.", "Convert {word} to capital letters.", "What is {word} in uppercase?",
              "Make the word {word} all caps."),
    "sort": ("Sort these numbers: {items}.", "Put {items} in ascending order.",
             "Order from smallest to largest: {items}.", "Sort {items} from low to high."),
    "last": ("What is the last word in: {words}?", "Which word comes last: {words}?",
             "Name the final word of the list {words}.", "Give the last of these words: {words}."),
    "larger": ("Which is larger, {a} or {b}?", "Which is bigger: {a} or {b}?", "What is the larger of {a} and {b}?",
               "Pick the greater of {a} and {b}."),
}

# Canonical answers. "is" rather than "=" so that every answer has letters (the upper-case
# instruction is then checkable on arithmetic too).
ANSWERS_EN = {
    "add": "{a} + {b} is {v}.", "sub": "{a} - {b} is {v}.", "mul": "{a} * {b} is {v}.",
    "reverse": "{word} reversed is {v}.", "count": "The letter {letter} appears {v} {times} in {word}.",
    "upper": "{word} in upper case is {v}.", "sort": "Sorted: {v}.", "last": "The last word is {v}.",
    "larger": "The larger one is {v}.",
}
# French answers, each checked to be identified as French by langid over the whole word list.
ANSWERS_FR = {
    "add": "La somme de {a} et {b} est {v}.", "sub": "La différence entre {a} et {b} est {v}.",
    "mul": "Le produit de {a} et {b} est {v}.", "reverse": "Le mot {word} à l'envers donne {v}.",
    "count": "La lettre {letter} apparaît {v} fois dans {word}.", "upper": "En majuscules, le mot {word} s'écrit {v}.",
    "sort": "Les nombres dans l'ordre sont : {v}.", "last": "Le dernier mot de la liste est {v}.",
    "larger": "Le plus grand des deux nombres est {v}.",
}


def split_of(key: str) -> str:
    """'eval' for one key in EVAL_SHARE (by sha256, seed-independent), else 'train'."""
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16)
    return "eval" if h % EVAL_SHARE == 0 else "train"


def split_pool(items: list[str] | tuple[str, ...], tag: str, split: str) -> list[str]:
    """Split a small list so that both parts are non-empty: the ceil(n/5) items with the lowest hash are eval."""
    ranked = sorted(items, key=lambda s: hashlib.sha256(f"{tag}:{s}".encode()).hexdigest())
    n_eval = max(1, -(-len(items) // EVAL_SHARE))
    chosen = set(ranked[:n_eval] if split == "eval" else ranked[n_eval:])
    return [s for s in items if s in chosen]


@functools.lru_cache(maxsize=1)
def load_words() -> tuple[str, ...]:
    """The shipped word list (resources/world/words.txt): lower case, no palindromes."""
    text = resources.files("llamaforge").joinpath("resources/world/words.txt").read_text(encoding="utf-8")
    words = tuple(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))
    bad = [w for w in words if not w.isalpha() or not w.islower() or w == w[::-1]]
    if bad:
        raise ValueError(f"resources/world/words.txt: bad words {bad[:5]}")
    return words


@functools.lru_cache(maxsize=2)
def words_for(split: str) -> tuple[str, ...]:
    return tuple(w for w in load_words() if split_of(f"word:{w}") == split)


def _key(kind: str, args: dict[str, Any]) -> str:
    """The identity of a task for the train/eval split: commutative operands are ordered."""
    if kind in ("add", "mul"):
        return f"{kind}:{min(args['a'], args['b'])}:{max(args['a'], args['b'])}"
    if kind == "sub":
        return f"sub:{args['a']}:{args['b']}"
    if kind == "sort":
        return "sort:" + ",".join(map(str, sorted(args["items"])))
    if kind == "larger":
        return f"larger:{min(args['a'], args['b'])}:{max(args['a'], args['b'])}"
    if kind == "last":  # the list, in order: held-out lists are new orders of familiar words
        return "last:" + ",".join(args["words"])
    return f"word:{args['word']}"  # one word split shared by reverse, count and upper


def _draw_args(rng: random.Random, kind: str, split: str) -> dict[str, Any]:
    if kind in ("reverse", "count", "upper"):
        word = rng.choice(words_for(split))
        if kind != "count":
            return {"word": word}
        # mostly a letter of the word; sometimes one that is absent (answer 0)
        letter = rng.choice(word) if rng.random() < 0.85 else rng.choice(
            [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in word])
        return {"word": word, "letter": letter}
    for _ in range(1000):
        if kind == "add":
            args: dict[str, Any] = {"a": rng.randint(0, ADD_MAX), "b": rng.randint(0, ADD_MAX)}
        elif kind == "sub":
            a = rng.randint(0, SUB_MAX)
            args = {"a": a, "b": rng.randint(0, a)}
        elif kind == "mul":
            args = {"a": rng.randint(0, MUL_MAX), "b": rng.randint(0, MUL_MAX)}
        elif kind == "sort":
            args = {"items": rng.sample(range(SORT_MAX + 1), rng.randint(*SORT_LEN))}
            if args["items"] == sorted(args["items"]):
                rng.shuffle(args["items"])
        elif kind == "larger":
            a, b = rng.sample(range(LARGER_MAX + 1), 2)
            args = {"a": a, "b": b}
        elif kind == "last":  # training words only, so that eval words stay unseen by every other task
            args = {"words": rng.sample(words_for("train"), rng.randint(*LAST_LEN))}
        else:
            raise ValueError(f"unknown skill kind {kind!r}; expected one of {SKILL_KINDS}")
        if split_of(_key(kind, args)) == split:
            return args
    raise RuntimeError(f"no {split} operands found for {kind}")


def expected_of(kind: str, args: dict[str, Any]) -> Any:
    """The checkable value: int for add/sub/mul/count/larger, str for reverse/upper/last, list[int] for sort."""
    if kind == "add":
        return args["a"] + args["b"]
    if kind == "sub":
        return args["a"] - args["b"]
    if kind == "mul":
        return args["a"] * args["b"]
    if kind == "reverse":
        return args["word"][::-1]
    if kind == "count":
        return args["word"].count(args["letter"])
    if kind == "upper":
        return args["word"].upper()
    if kind == "sort":
        return sorted(args["items"])
    if kind == "last":
        return args["words"][-1]
    if kind == "larger":
        return max(args["a"], args["b"])
    raise ValueError(f"unknown skill kind {kind!r}")


def _fmt_items(items: list[int]) -> str:
    return ", ".join(map(str, items))


def skill_answer(kind: str, args: dict[str, Any], value: Any = None, lang: str = "en") -> str:
    """The canonical answer (lang 'en' or 'fr'), with `value` in place of the right one when given."""
    v = expected_of(kind, args) if value is None else value
    fields = dict(args, v=_fmt_items(v) if kind == "sort" else v, times="time" if v == 1 else "times")
    return (ANSWERS_FR if lang == "fr" else ANSWERS_EN)[kind].format(**fields)


def sample_skill(rng: random.Random, split: str, kind: str | None = None) -> dict[str, Any]:
    """A skill task record: prompt, kind, args, expected value and the canonical reference answer."""
    kind = kind or rng.choice(SKILL_KINDS)
    args = _draw_args(rng, kind, split)
    fields = dict(args, items=_fmt_items(args["items"])) if kind == "sort" else args
    fields = dict(args, words=", ".join(args["words"])) if kind == "last" else fields
    prompt = rng.choice(PROMPTS[kind]).format(**fields)
    return {"category": "skill", "kind": kind, "prompt": prompt, "safety": False, "args": args,
            "expected": expected_of(kind, args), "reference": skill_answer(kind, args)}


# --- flawed answers, by how wrong they are (for preference pairs) ---

def wrong_value(record: dict[str, Any], rng: random.Random, near: bool) -> Any:
    """A wrong value: off by one / one swap when `near`, clearly wrong otherwise. Never the right one."""
    kind, args, exp = record["kind"], record["args"], record["expected"]
    if kind in ("add", "sub", "mul", "count"):
        if near:
            return exp + 1 if exp == 0 or rng.random() < 0.5 else exp - 1
        return rng.choice([v for v in range(max(0, exp - 20), exp + 21) if abs(v - exp) >= 3])
    if kind == "sort":
        if near:
            i = rng.randrange(len(exp) - 1)
            return exp[:i] + [exp[i + 1], exp[i]] + exp[i + 2:]
        return list(args["items"]) if args["items"] != exp else exp[::-1]
    if kind == "reverse":
        if near:  # two neighbouring letters swapped (choose a pair of different letters)
            pairs = [i for i in range(len(exp) - 1) if exp[i] != exp[i + 1]]
            i = rng.choice(pairs)
            return exp[:i] + exp[i + 1] + exp[i] + exp[i + 2:]
        return args["word"]  # not reversed at all
    if kind == "upper":
        if near:
            i = rng.randrange(len(exp))
            return exp[:i] + exp[i].lower() + exp[i + 1:]
        return args["word"]
    if kind == "last":  # the one before the last, or any other word of the list
        return args["words"][-2] if near else rng.choice(args["words"][:-1])
    if kind == "larger":  # the smaller operand (the usual slip), or a number near the right one
        small = min(args["a"], args["b"])
        return small if near else rng.choice([v for v in range(exp - 5, exp + 6) if v not in (exp, small)])
    raise ValueError(f"unknown skill kind {kind!r}")


def malformed(answer: str, rng: random.Random) -> str:
    """The same content, slightly untidy: no final full stop, or a doubled space."""
    if answer.endswith(".") and rng.random() < 0.5:
        return answer[:-1]
    i = answer.find(" ")
    return answer[:i] + "  " + answer[i + 1:] if i >= 0 else answer + " ."


# --- checking ---

_INT = re.compile(r"-?\d+")


def _ints(text: str) -> list[int]:
    return [int(m) for m in _INT.findall(text)]


def _has_word(text: str, word: str, ignore_case: bool) -> bool:
    flags = re.IGNORECASE if ignore_case else 0
    return re.search(rf"(?<![^\W\d_]){re.escape(word)}(?![^\W\d_])", text, flags) is not None


def skill_correct(record: dict[str, Any], answer: str) -> bool:
    """Tolerant but strict enough that random text fails.

    add/sub/mul/count/larger: the LAST integer in the answer is the expected one ("12 + 7 is 19." and
    "La somme de 12 et 7 est 19." pass; "19 or 20" fails). sort: the last len(list) integers are
    the sorted list. reverse: the reversed word appears as a whole word, any case. upper: the
    upper-cased word appears as a whole word, exactly in capitals. last: the last word appears, any
    case, and no other word of the list does.
    """
    kind, exp = record["kind"], record["expected"]
    if kind in ("add", "sub", "mul", "count", "larger"):
        nums = _ints(answer)
        return bool(nums) and nums[-1] == int(exp)
    if kind == "sort":
        nums = _ints(answer)
        return len(nums) >= len(exp) and nums[-len(exp):] == list(exp)
    if kind == "reverse":
        return _has_word(answer, str(exp), ignore_case=True)
    if kind == "upper":
        return _has_word(answer, str(exp), ignore_case=False)
    if kind == "last":  # the last word, and no other word of the list ("a, b or c" fails)
        others = [w for w in (record.get("args") or {}).get("words", []) if w != exp]
        return _has_word(answer, str(exp), ignore_case=True) and not any(
            _has_word(answer, w, ignore_case=True) for w in others)
    raise ValueError(f"record has unknown skill kind {kind!r}; expected one of {SKILL_KINDS}")
