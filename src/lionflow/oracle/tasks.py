"""Task families with checkable answers, used by the oracle LLM and the demo data.

Every family renders its instruction from fixed templates whose fields have a
type given by the field name (see ``_FIELD_RE``); the same templates compile to
regexes, so ``parse_problem`` recognises exactly what ``sample_problem`` writes.
Answers are short and canonical so a tiny character-level student can learn
the common families.
"""
from __future__ import annotations

import difflib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    family: str
    level: int
    instruction: str
    input: str
    answer: str


@dataclass(frozen=True)
class Family:
    name: str
    rarity: int                      # rank: 0 = most common
    max_level: int
    kind: str                        # grading: "text", "choice", "num" or "list"
    inline: tuple[str, ...]          # self-contained templates; params["form"] picks one
    sample: Callable[[random.Random, int], dict]
    level_of: Callable[[dict], int]
    solve: Callable[[dict], str]
    split: tuple[str, str] | None = None   # (instruction, input) template, Alpaca-style
    options: Callable[[dict], list[str]] | None = None  # choices, for kind "choice"


WORDS = {n: ws.split() for n, ws in {
    3: "cat dog fox owl bee ant cow pig rat elk yak emu ape bat hen ram jay eel cod gnu "
       "sun sky sea map cup pen box hat jam toy",
    4: "lion bear wolf deer frog duck goat hare lamb mole moth seal swan toad crab fish "
       "bird lark dove kiwi rock tree leaf rain snow star moon ship book door",
    5: "tiger horse mouse camel sheep zebra otter eagle shark whale snake koala panda llama "
       "bison moose raven robin goose heron apple bread chair cloud river stone plant light "
       "train water",
    6: "rabbit monkey donkey turtle badger beaver falcon parrot pigeon salmon spider jaguar "
       "lizard walrus weasel ferret garden window pencil bottle candle forest silver castle "
       "planet dragon",
    7: "giraffe dolphin leopard panther penguin hamster buffalo cheetah gorilla lobster "
       "octopus ostrich peacock pelican sparrow vulture chicken kitchen blanket lantern "
       "rainbow thunder village picture journey",
}.items()}
NAMES = "Tom Anna Ben Lily Sam Mia Max Zoe Leo Emma".split()
OBJECTS = "apples pears marbles stickers books coins shells cookies pencils cards".split()


def _clamp(x: int, hi: int) -> int:
    return max(1, min(hi, x))


def _digits(n: int) -> int:
    return len(str(abs(n)))


def _num(rng: random.Random, digits: int, lo1: int = 1) -> int:
    """A random number with exactly `digits` digits (lo1 = smallest 1-digit value)."""
    return rng.randint(lo1 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def _word(rng: random.Random, level: int) -> dict:
    return {"w": rng.choice(WORDS[level + 2])}


def _word_level(hi: int) -> Callable[[dict], int]:
    return lambda p: _clamp(len(p["w"]) - 2, hi)


def _list(rng: random.Random, level: int) -> dict:
    return {"xs": rng.sample(range(1, 100), level + 1)}


def _list_level(p: dict) -> int:
    return _clamp(len(p["xs"]) - 1, 5)


def _join(xs) -> str:
    return ", ".join(str(x) for x in xs)


def _two(rng: random.Random, level: int) -> dict:
    a = _num(rng, level)
    b = _num(rng, level)
    while b == a:          # "which is larger" needs two different numbers
        b = _num(rng, level)
    return {"a": a, "b": b}


def _count(rng: random.Random, level: int) -> dict:
    w = rng.choice(WORDS[level + 2])
    # Mostly a letter of the word; sometimes one that is absent (answer 0).
    c = rng.choice(w) if rng.random() < 0.8 else rng.choice(sorted(set("abcdefghijklmnopqrstuvwxyz") - set(w)))
    return {"c": c, "w": w}


def _sub(rng: random.Random, level: int) -> dict:
    a = _num(rng, level)
    return {"a": a, "b": rng.randint(1, a)}


def _mul(rng: random.Random, level: int) -> dict:
    da, db = [(1, 1), (2, 1), (2, 2), (3, 2)][level - 1]
    return {"a": _num(rng, da, 2), "b": _num(rng, db, 2)}


def _story(rng: random.Random, level: int) -> dict:
    form, d = (level - 1) % 2, (level - 1) // 2 + 1   # odd levels buy, even levels give away
    a = _num(rng, d, 2)
    b = rng.randint(1, a) if form else rng.randint(1, 10 ** d - 1)
    return {"form": form, "name": rng.choice(NAMES), "obj": rng.choice(OBJECTS), "a": a, "b": b}


def _story_level(p: dict) -> int:
    return _clamp((max(_digits(p["a"]), _digits(p["b"])) - 1) * 2 + p["form"] + 1, 4)


_STORY = "{name} has {a} {obj} and {verb}. How many {obj} does {name} have now?"

FAMILIES: tuple[Family, ...] = tuple(Family(rarity=i, **kw) for i, kw in enumerate([
    dict(name="repeat", max_level=5, kind="text", inline=('Repeat the word "{w}".',),
         sample=_word, level_of=_word_level(5), solve=lambda p: p["w"]),
    dict(name="first_letter", max_level=3, kind="text",
         inline=('What is the first letter of the word "{w}"?',),
         sample=_word, level_of=_word_level(3), solve=lambda p: p["w"][0]),
    dict(name="uppercase", max_level=5, kind="text", inline=('Write the word "{w}" in uppercase.',),
         sample=_word, level_of=_word_level(5), solve=lambda p: p["w"].upper()),
    dict(name="larger", max_level=4, kind="choice", inline=("Which number is larger, {a} or {b}?",),
         sample=_two, level_of=lambda p: _clamp(max(_digits(p["a"]), _digits(p["b"])), 4),
         solve=lambda p: str(max(p["a"], p["b"])), options=lambda p: [str(p["a"]), str(p["b"])]),
    dict(name="parity", max_level=5, kind="choice", inline=("Is {n} even or odd?",),
         sample=lambda rng, lv: {"n": _num(rng, lv)}, level_of=lambda p: _clamp(_digits(p["n"]), 5),
         solve=lambda p: "odd" if p["n"] % 2 else "even", options=lambda p: ["even", "odd"]),
    dict(name="add", max_level=5, kind="num", inline=("What is {a} + {b}?",),
         sample=lambda rng, lv: {"a": _num(rng, lv), "b": _num(rng, lv)},
         level_of=lambda p: _clamp(max(_digits(p["a"]), _digits(p["b"])), 5),
         solve=lambda p: str(p["a"] + p["b"])),
    dict(name="subtract", max_level=5, kind="num", inline=("What is {a} - {b}?",),
         sample=_sub, level_of=lambda p: _clamp(max(_digits(p["a"]), _digits(p["b"])), 5),
         solve=lambda p: str(p["a"] - p["b"])),
    dict(name="count_letter", max_level=5, kind="num",
         inline=('How many times does the letter "{c}" appear in the word "{w}"?',),
         sample=_count, level_of=_word_level(5), solve=lambda p: str(p["w"].count(p["c"]))),
    dict(name="reverse", max_level=5, kind="text", inline=('Reverse the word "{w}".',),
         sample=_word, level_of=_word_level(5), solve=lambda p: p["w"][::-1]),
    dict(name="max_list", max_level=5, kind="num",
         inline=("What is the largest number in this list: {xs}?",),
         split=("Find the largest number in the input.", "{xs}"),
         sample=_list, level_of=_list_level, solve=lambda p: str(max(p["xs"]))),
    dict(name="min_list", max_level=5, kind="num",
         inline=("What is the smallest number in this list: {xs}?",),
         split=("Find the smallest number in the input.", "{xs}"),
         sample=_list, level_of=_list_level, solve=lambda p: str(min(p["xs"]))),
    dict(name="sort", max_level=5, kind="list",
         inline=("Sort these numbers in ascending order: {xs}.",),
         split=("Sort the numbers in the input in ascending order.", "{xs}"),
         sample=_list, level_of=_list_level, solve=lambda p: _join(sorted(p["xs"]))),
    dict(name="multiply", max_level=4, kind="num", inline=("What is {a} * {b}?",),
         sample=_mul, level_of=lambda p: _clamp(_digits(p["a"]) + _digits(p["b"]) - 1, 4),
         solve=lambda p: str(p["a"] * p["b"])),
    dict(name="word_problem", max_level=4, kind="num",
         inline=(_STORY.replace("{verb}", "buys {b} more"), _STORY.replace("{verb}", "gives away {b}")),
         sample=_story, level_of=_story_level,
         solve=lambda p: str(p["a"] + p["b"] if p["form"] == 0 else p["a"] - p["b"])),
]))
BY_NAME = {f.name: f for f in FAMILIES}

# Field name -> (regex, converter). Repeated fields become back-references.
_FIELDS = {
    "a": (r"-?\d+", int), "b": (r"-?\d+", int), "n": (r"-?\d+", int),
    "w": (r"[A-Za-z]+", str), "c": (r"[A-Za-z]", str),
    "xs": (r"-?\d+(?:\s*,\s*-?\d+)*", lambda s: [int(x) for x in s.split(",")]),
    "name": (r"[A-Z][a-z]+", str), "obj": (r"[a-z]+", str),
}
_FIELD_RE = re.compile(r"\{(\w+)\}")


def _compile(template: str) -> re.Pattern:
    out, seen, pos = [], set(), 0
    for m in _FIELD_RE.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        f = m.group(1)
        out.append(f"(?P={f})" if f in seen else f"(?P<{f}>{_FIELDS[f][0]})")
        seen.add(f)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def _render(template: str, p: dict) -> str:
    return _FIELD_RE.sub(lambda m: _join(p[m.group(1)]) if m.group(1) == "xs" else str(p[m.group(1)]),
                         template)


_INLINE = [(f, form, _compile(t)) for f in FAMILIES for form, t in enumerate(f.inline)]
_SPLIT = [(f, " ".join(f.split[0].split()), _compile(f.split[1])) for f in FAMILIES if f.split]


def _norm_ws(s: str) -> str:
    return " ".join(s.split())


def _params(m: re.Match, form: int | None = None) -> dict:
    p = {k: _FIELDS[k][1](v) for k, v in m.groupdict().items()}
    return p if form is None else {**p, "form": form}


def parse_family(instruction: str, input: str = "") -> tuple[Family, dict] | None:
    """(family, params) for a recognised instruction, else None."""
    instruction, input = _norm_ws(instruction), _norm_ws(input or "")
    if input:
        for f, instr, rx in _SPLIT:
            if instruction == instr and (m := rx.fullmatch(input)):
                return f, _params(m)
        return None
    for f, form, rx in _INLINE:
        if m := rx.fullmatch(instruction):
            p = _params(m, form if len(f.inline) > 1 else None)
            if f.name == "larger" and p["a"] == p["b"]:
                return None      # no well-defined answer
            return f, p
    return None


def _problem(f: Family, p: dict, instruction: str, input: str) -> Problem:
    return Problem(f.name, f.level_of(p), instruction, input, f.solve(p))


def sample_params(rng: random.Random, family: str, level: int) -> dict:
    f = BY_NAME[family]
    return f.sample(rng, _clamp(level, f.max_level))


def render(family: str, params: dict, split: bool = False) -> Problem:
    """The Problem for given params; split=True uses the Alpaca-style input form if any."""
    f = BY_NAME[family]
    if split and f.split:
        return _problem(f, params, f.split[0], _render(f.split[1], params))
    return _problem(f, params, _render(f.inline[params.get("form", 0)], params), "")


def sample_problem(rng: random.Random, family: str, level: int, split: bool = False) -> Problem:
    """A random problem; split=True puts the data in `input` for families that allow it."""
    return render(family, sample_params(rng, family, level), split)


def parse_problem(instruction: str, input: str = "") -> Problem | None:
    """Recognise an instruction written by sample_problem and solve it; None otherwise."""
    hit = parse_family(instruction, input)
    return _problem(hit[0], hit[1], instruction.strip(), (input or "").strip()) if hit else None


def problem_key(instruction: str, input: str = "") -> tuple | None:
    """Identity of the underlying task, equal for its inline and split renderings."""
    hit = parse_family(instruction, input)
    return (hit[0].name, tuple(sorted((k, str(v)) for k, v in hit[1].items()))) if hit else None


# ---------------------------------------------------------------- grading

def _clean(text: str) -> str:
    text = _norm_ws(text or "").strip().strip("\"'`").strip()
    return text.rstrip(".!").strip().strip("\"'`").strip()


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", " , "))]


def grade(problem: Problem, answer_text: str) -> float:
    """Score in [0, 1]: 1 for the canonical answer, partial credit for near misses."""
    got, want = _clean(answer_text), problem.answer
    if not got:
        return 0.0
    if got == want:
        return 1.0
    f = BY_NAME[problem.family]
    if f.kind == "text":
        if got.lower() == want.lower():
            return 0.5 if f.name == "uppercase" else 1.0   # case is the task for uppercase
        r = difflib.SequenceMatcher(None, got.lower(), want.lower()).ratio()
        return 0.8 * r if r >= 0.3 else 0.0
    if f.kind == "choice":
        hit = parse_family(problem.instruction, problem.input)
        options = f.options(hit[1]) if hit else [want]
        tokens = set(re.findall(r"[a-z0-9]+", got.lower()))
        if got.lower() == want:
            return 1.0
        # A verbose answer naming only the right option still counts mostly.
        return 0.8 if want in tokens and not (tokens & (set(options) - {want})) else 0.0
    nums = _numbers(got)
    if f.kind == "list":
        target = [float(x) for x in want.split(",")]
        if nums == target:
            return 0.9
        return 0.8 * difflib.SequenceMatcher(None, nums, target).ratio()
    if not nums:
        return 0.0
    t = float(want)
    if nums == [t]:
        return 0.9          # right number, extra words
    if nums[-1] == t:
        return 0.8
    return 0.7 * max(0.0, 1 - abs(nums[-1] - t) / max(abs(t), 1))
