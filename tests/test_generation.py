import polars as pl
import pytest

from lionflow.generation import Filters, generate_instructions, reject_reason
from lionflow.llm import Completion
from lionflow.oracle.tasks import BY_NAME, parse_problem
from lionflow.prompts import PromptTemplate

from conftest import PROMPTS

FILTERS = Filters(min_words=4, rouge_threshold=0.7, leak_words=("#Given Prompt#", "Created Prompt"))


@pytest.mark.parametrize("text, finish, reason", [
    ("What is 12 + 30 today?", "length", "truncated"),
    ("Add two numbers", "stop", "too_short"),
    ("- What is 12 + 30?", "stop", "starts_with_punctuation"),
    ("#Created Prompt#: What is 12 + 30?", "stop", "starts_with_punctuation"),
    ("Here is my Created Prompt: what is 1 + 2?", "stop", "leaked_template"),
    ("What is 12 + 30?", "stop", None),
    ('"Lion" reversed is what word?', "stop", None),
    # not text: a real small model produced the replacement character; control characters likewise
    ("What is the first letter of \ufffd\ufffd?", "stop", "not_text"),
    ("Sort these numbers: 3, 1,\x00 2", "stop", "not_text"),
    ("Count the letters in \x1b[31mred\x1b[0m please", "stop", "not_text"),
    ("Sort these numbers:\n3, 1, 2\tplease", "stop", None),
    ("Wie viele Buchstaben hat das Wort \"Löwe\"?", "stop", None),
])
def test_cheap_filters(text, finish, reason):
    assert reject_reason(text, finish, FILTERS) == reason


def _examples(*instructions):
    return pl.DataFrame([{"id": f"h{i}", "instruction": t, "input": "", "teacher_score": 9.5, "student_score": 1.5,
                          "gap": 8.0} for i, t in enumerate(instructions)])


def test_hard_generation_with_the_oracle_keeps_the_family(oracle_llm):
    template = PromptTemplate.load(PROMPTS / "generator_hard.yaml")
    examples = _examples("What is 23 + 72?", "Sort these numbers in ascending order: 5, 3, 9.")
    pool = examples["instruction"].to_list()
    kept, rejected = generate_instructions(oracle_llm("generator"), template, examples, origin="hard", count=6,
                                           iteration=1, pool=pool, filters=FILTERS, seed=0, max_rounds=3)
    assert len(kept) == 6
    by_id = {e["id"]: e for e in examples.to_dicts()}
    for k in kept:
        parent = parse_problem(by_id[k["parent_id"]]["instruction"])
        child = parse_problem(k["instruction"])
        assert child is not None and child.family == parent.family and child.level >= parent.level
        assert k["origin"] == "hard" and k["iteration"] == 1 and 0 <= k["max_similarity"] <= 0.7
    assert len({k["instruction"] for k in kept}) == 6 and len(pool) == 2 + 6
    assert all(r["reason"] in {"near_duplicate", "too_short", "truncated"} for r in rejected)


def test_easy_generation_moves_to_a_rarer_family(oracle_llm):
    template = PromptTemplate.load(PROMPTS / "generator_easy.yaml")
    examples = _examples("Repeat the word \"owl\".")
    kept, _ = generate_instructions(oracle_llm("generator"), template, examples, origin="easy", count=4,
                                    iteration=2, pool=[], filters=FILTERS, seed=0, max_rounds=3)
    assert kept and all(BY_NAME[parse_problem(k["instruction"]).family].rarity > BY_NAME["repeat"].rarity for k in kept)


class Echo:
    """A generator that always proposes the same instruction."""

    def complete(self, requests, desc="", ids=None):
        return [Completion("What is the sum of 10 and 20 here?", "stop", False) for _ in requests]


def test_near_duplicates_are_rejected_with_their_reason_and_rounds_stop():
    template = PromptTemplate.load(PROMPTS / "generator_hard.yaml")
    kept, rejected = generate_instructions(Echo(), template, _examples("What is 1 + 2?"), origin="hard", count=3,
                                           iteration=1, pool=[], filters=FILTERS, seed=0, max_rounds=2)
    assert len(kept) == 1
    assert [r["reason"] for r in rejected] == ["near_duplicate"] * 4  # 2 in round 1, 2 in round 2
    assert rejected[0]["max_similarity"] == 1.0 and rejected[0]["most_similar"] == kept[0]["instruction"]


def test_no_examples_means_no_requests():
    kept, rejected = generate_instructions(None, None, _examples(), origin="hard", count=5, iteration=1, pool=[],
                                           filters=FILTERS, seed=0, max_rounds=3)
    assert kept == [] and rejected == []
