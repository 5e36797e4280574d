"""The oracle's three roles (teacher, referee, generator), chosen from the prompt text."""
from __future__ import annotations

import hashlib
import random
import re

from .tasks import BY_NAME, FAMILIES, grade, parse_problem, sample_problem

REFEREE_MARK = "[The Start of Assistant 1's Answer]"
GENERATOR_MARK = "#Given Prompt#"
CANNOT = "I cannot solve this task."
POSITION_BIAS = 1          # extra points for the answer shown first (like real LLM judges)


def message_text(content) -> str:
    """Message content as text; OpenAI also allows a list of content parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _between(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    i += len(start)
    j = text.find(end, i)
    return text[i:j if j >= 0 else len(text)].strip()


def teacher(user: str) -> str:
    instruction, _, input = user.partition("\n\nInput:\n")
    p = parse_problem(instruction, input)
    return p.answer if p else CANNOT


def referee(user: str) -> str:
    head = _between(user, "[Instruction]", REFEREE_MARK) or ""
    instruction, _, input = head.partition("[Input]")
    a1 = _between(user, REFEREE_MARK, "[The End of Assistant 1's Answer]") or ""
    a2 = _between(user, "[The Start of Assistant 2's Answer]", "[The End of Assistant 2's Answer]") or ""
    p = parse_problem(instruction, input)
    if p is None:
        g1 = g2 = 0.5
        why = "I cannot check this task, so I rate both answers the same."
    else:
        g1, g2 = grade(p, a1), grade(p, a2)
        word = lambda g: "correct" if g == 1 else "partly correct" if g >= 0.5 else "wrong"
        why = f"The expected answer is {p.answer}. Assistant 1's answer is {word(g1)} and Assistant 2's answer is {word(g2)}."
    s1 = min(10, 1 + round(8 * g1) + POSITION_BIAS)
    s2 = 1 + round(8 * g2)
    return f"{why}\nAssistant 1: {s1}\nAssistant 2: {s2}"


def _rng(user: str, seed) -> random.Random:
    # sha256, not hash(): stable across processes (PYTHONHASHSEED) and runs.
    digest = hashlib.sha256(f"{user}\0{seed}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def generator(user: str, seed=None) -> str:
    example = _between(user, GENERATOR_MARK + ":\n", "\n\n#Created Prompt#:") or ""
    first, _, rest = example.partition("\n")
    ex = parse_problem(example) or parse_problem(first, rest)
    rng = _rng(user, seed)
    easy = "rarer" in user
    if ex is None:
        fam = rng.choice(FAMILIES)
        level = rng.choice([1, 2])
    elif easy:
        rank = BY_NAME[ex.family].rarity
        pool = [f for f in FAMILIES if f.rarity > rank] or [f for f in FAMILIES if f.rarity != rank]
        fam = rng.choice(pool)
        level = max(1, min(fam.max_level, ex.level - rng.choice([0, 1])))
    else:
        fam = BY_NAME[ex.family]
        level = min(fam.max_level, ex.level + rng.choice([0, 1]))
    for _ in range(10):    # avoid echoing the example back
        new = sample_problem(rng, fam.name, level)   # inline form: self-contained
        if ex is None or new.instruction != ex.instruction:
            break
    return new.instruction


def _truncate(text: str, max_tokens) -> tuple[str, str]:
    """Cut to max_tokens whitespace-separated words (our notion of a token)."""
    if max_tokens is None:
        return text, "stop"
    words = list(re.finditer(r"\S+", text))
    if len(words) <= max_tokens:
        return text, "stop"
    return (text[:words[max_tokens - 1].end()] if max_tokens > 0 else ""), "length"


def respond(messages: list[dict], params: dict) -> tuple[str, str]:
    """(content, finish_reason) for a chat request; the role follows from the last user message."""
    users = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    user = users[-1] if users else ""
    if REFEREE_MARK in user:
        reply = referee(user)
    elif GENERATOR_MARK in user:
        reply = generator(user, params.get("seed"))
    else:
        reply = teacher(user)
    return _truncate(reply, params.get("max_tokens"))
