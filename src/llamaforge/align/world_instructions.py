"""System instructions that a checker can verify, for SFT, Ghost Attention and its evaluation.

Six types in four families (the paper's GAtt families: a style rule, a language, a character, a
hobby). Each instruction has a long form ("Act as Napoleon.") and a short form ("Figure: Napoleon");
`parse_instruction` reads either back, so a checker needs only the system text. Two types are
held out of GAtt training (`held_out=True`) to measure zero-shot retention; SFT still shows every
type in single-turn examples, so the model can obey each at turn 1.
"""

from __future__ import annotations

import functools
import random
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

from llamaforge.align.world_tasks import skill_answer, split_pool
from llamaforge.errors import UserError


@dataclass(frozen=True)
class InstructionType:
    name: str
    family: str  # "style" | "language" | "character" | "hobby"
    held_out: bool  # held out of GAtt training (for the zero-shot claim)
    description: str


INSTRUCTION_TYPES: tuple[InstructionType, ...] = (
    InstructionType("upper", "style", False, "answer in upper case (some letters, none lower case)"),
    InstructionType("begin", "style", False, "begin every answer with a given word"),
    InstructionType("end_emoji", "style", True, "end every answer with a given emoji"),
    InstructionType("french", "language", False, "answer in French (langid)"),
    InstructionType("character", "character", False, "act as a character (the answer names them)"),
    InstructionType("hobby", "hobby", True, "have a hobby (the answer mentions it)"),
)
TYPES_BY_NAME = {t.name: t for t in INSTRUCTION_TYPES}

ARGS: dict[str, tuple[str, ...]] = {
    "begin": ("Ahoy", "Indeed", "Hello", "Greetings", "Well", "Okay", "Listen", "Behold", "Alright", "Howdy",
              "Splendid", "Certainly"),
    "end_emoji": ("🌟", "🚀", "🎉", "🍀", "🔥", "🌈", "🐱", "🍎", "🎵", "🌻", "💡", "🐢"),
    "character": ("Napoleon", "Cleopatra", "Einstein", "Shakespeare", "Mozart", "Sherlock", "Picasso", "Newton",
                  "Darwin", "Edison", "Galileo", "Beethoven"),
    "hobby": ("chess", "tennis", "gardening", "painting", "fishing", "cooking", "hiking", "surfing", "knitting",
              "baking", "cycling", "juggling"),
}
LONG: dict[str, tuple[str, ...]] = {
    "upper": ("Answer in upper case.", "Always write in capital letters.", "Reply using only uppercase letters."),
    "begin": ("Begin every answer with the word {x}.", "Start each reply with {x}."),
    "end_emoji": ("End every answer with {x}.", "Finish each reply with the emoji {x}."),
    "french": ("Answer in French.", "Always reply in French.", "Speak in French."),
    "character": ("Act as {x}.", "You are {x}; stay in character.", "Pretend to be {x} in every answer."),
    "hobby": ("You love {x}; mention it in every answer.", "Your hobby is {x}; bring it up in each reply."),
}
SHORT = {"upper": "Style: upper case", "begin": "First word: {x}", "end_emoji": "End with: {x}",
         "french": "Language: French", "character": "Figure: {x}", "hobby": "Hobby: {x}"}


@dataclass(frozen=True)
class Instruction:
    """A checkable system instruction: its type, its argument (word, emoji, name, hobby) and its text."""
    type: str
    arg: str | None
    text: str
    short: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instruction:
        if d.get("type") not in TYPES_BY_NAME:
            raise UserError(f"instruction type {d.get('type')!r} is not one of {', '.join(TYPES_BY_NAME)}")
        return cls(d["type"], d.get("arg"), d.get("text") or "", bool(d.get("short", False)))


def held_out_types() -> list[str]:
    return [t.name for t in INSTRUCTION_TYPES if t.held_out]


def trained_types() -> list[str]:
    return [t.name for t in INSTRUCTION_TYPES if not t.held_out]


def instruction_args(type_name: str, split: str = "train") -> list[str]:
    """The arguments of a type for a split (eval words, emojis, names and hobbies differ from train ones)."""
    return split_pool(ARGS[type_name], f"arg:{type_name}", split) if type_name in ARGS else []


def make_instruction(type_name: str, rng: random.Random, split: str = "train", short: bool | None = None,
                     arg: str | None = None) -> Instruction:
    """An instruction of a type: a random argument of the split, long or short form (short half the time)."""
    if type_name not in TYPES_BY_NAME:
        raise UserError(f"instruction type {type_name!r} is not one of {', '.join(TYPES_BY_NAME)}")
    if arg is None and type_name in ARGS:
        arg = rng.choice(instruction_args(type_name, split))
    short = rng.random() < 0.5 if short is None else short
    template = SHORT[type_name] if short else rng.choice(LONG[type_name])
    return Instruction(type_name, arg, template.format(x=arg), short)


def gatt_instruction(rng: random.Random, held_out: bool | None = False, split: str = "train",
                     short: bool | None = None) -> Instruction:
    """A GAtt-style system instruction (a style rule, a language, a character or a hobby).

    held_out=False draws only types used in GAtt training, True only held-out ones, None any type.
    Half the time (short=None) the shortened form, e.g. "Figure: Napoleon".
    """
    names = [t.name for t in INSTRUCTION_TYPES if held_out is None or t.held_out == held_out]
    return make_instruction(rng.choice(names), rng, split=split, short=short)


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(re.escape("{x}"), "(.+?)") + "$", re.IGNORECASE)


_PARSERS = [(name, _template_regex(t), t == SHORT[name])
            for name in TYPES_BY_NAME for t in (*LONG[name], SHORT[name])]


def parse_instruction(text: str) -> Instruction | None:
    """Read an instruction back from its text (long or short form); None if the text is not one of ours."""
    clean = " ".join(text.split()).rstrip()
    for name, regex, short in _PARSERS:
        m = regex.match(clean)
        if m:
            return Instruction(name, m.group(1) if m.groups() else None, text, short)
    return None


def as_instruction(instruction: Instruction | dict[str, Any] | str) -> Instruction:
    if isinstance(instruction, Instruction):
        return instruction
    if isinstance(instruction, dict):
        return Instruction.from_dict(instruction)
    parsed = parse_instruction(instruction)
    if parsed is None:
        raise UserError(f"not a checkable instruction: {instruction!r} "
                        f"(see llamaforge.align.world_instructions.LONG and SHORT for the forms)")
    return parsed


_LANGID: Any = None
_LANGID_LOCK = threading.Lock()


def _langid() -> Any:
    """The langid identifier, loaded once on first use (about 1.3 s)."""
    global _LANGID
    with _LANGID_LOCK:
        if _LANGID is None:
            try:
                from langid.langid import LanguageIdentifier, model
            except ModuleNotFoundError as e:
                raise UserError("checking 'answer in French' needs langid: pip install 'llamaforge[data]'") from e
            _LANGID = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    return _LANGID


@functools.lru_cache(maxsize=65536)  # RL and eval loops check the same answers again and again
def is_french(text: str, threshold: float = 0.5) -> bool:
    """langid says French with probability >= threshold (all-capitals text is also tried lower-cased)."""
    ident = _langid()
    tries = [text] if any(c.islower() for c in text) else [text, text.lower()]
    for t in tries:
        lang, prob = ident.classify(t)
        if lang == "fr" and prob >= threshold:
            return True
    return False


def _first_word(text: str) -> str:
    m = re.match(r"[\W\d_]*([^\W\d_]+)", text)
    return m.group(1) if m else ""


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![^\W\d_]){re.escape(word)}(?![^\W\d_])", text, re.IGNORECASE) is not None


def check_instruction(instruction: Instruction | dict[str, Any] | str, answer: str) -> bool:
    """Does `answer` obey the instruction? Accepts an Instruction, its dict, or its text."""
    ins = as_instruction(instruction)
    a = answer.strip()
    if ins.type == "upper":
        return any(c.isalpha() for c in a) and not any(c.islower() for c in a)
    if ins.type == "begin":
        return _first_word(a).lower() == (ins.arg or "").lower()
    if ins.type == "end_emoji":
        return bool(ins.arg) and a.rstrip("\ufe0f \t\n").endswith(ins.arg.rstrip("\ufe0f"))
    if ins.type == "french":
        return is_french(a)
    if ins.type in ("character", "hobby"):
        return bool(ins.arg) and _mentions(a, ins.arg)
    raise UserError(f"instruction type {ins.type!r} is not one of {', '.join(TYPES_BY_NAME)}")


def obey(instruction: Instruction, kind: str, args: dict[str, Any], value: Any = None) -> str:
    """The canonical answer to a skill task, written as the instruction asks."""
    if instruction.type == "french":
        return skill_answer(kind, args, value, lang="fr")
    return apply_style(instruction, skill_answer(kind, args, value))


def apply_style(instruction: Instruction, answer: str) -> str:
    """Rewrite an English answer to obey a non-language instruction."""
    t, x = instruction.type, instruction.arg
    if t == "upper":
        return answer.upper()
    if t == "begin":
        return f"{x}! {answer}"
    if t == "end_emoji":
        return f"{answer} {x}"
    if t == "character":
        return f"{x} here: {answer}"
    if t == "hobby":
        return f"{answer} I love {x}."
    raise ValueError(f"{t!r} cannot be applied to an English answer")
