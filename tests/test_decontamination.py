"""Decontamination: generated instructions overlapping an evaluation set are rejected as `contaminated`."""
import polars as pl
import pytest

from lionflow.artifacts import validate
from lionflow.decontamination import Decontaminator, decontaminator, eval_texts
from lionflow.generation import Filters, generate_instructions
from lionflow.prompts import PromptTemplate

from conftest import PROMPTS, ROOT, ScriptedGenerator

QUESTION = "Which number is larger, 268 or 673?"  # 7 tokens: which number is larger 268 or 673
STORY = ("Write a short story about a lion who learns to share the food he hunts with the other animals "
         "of the savanna")  # 23 tokens
EVAL = [QUESTION, STORY, "Hello there"]


def check(*candidates, **kw):
    settings = dict(rouge_threshold=0.8, ngram=13, min_ngram=4) | kw
    return Decontaminator(EVAL, **settings).check(list(candidates))


def test_a_copied_question_is_contaminated_by_both_checks():
    [m] = check(QUESTION)
    assert m.max_similarity == 1.0 and m.most_similar == QUESTION
    assert m.shared_ngram == "which number is larger 268 or 673"  # shorter than 13 tokens: the whole question


def test_a_light_paraphrase_above_the_threshold_is_contaminated():
    # one word of 7 changed: LCS 6, P = R = 6/7, F = 6/7 = 0.857 > 0.8; no 7-token run in common
    [m] = check("Which number is bigger, 268 or 673?")
    assert m.max_similarity == pytest.approx(6 / 7, abs=1e-6) and m.shared_ngram is None
    assert m.most_similar == QUESTION
    # the same rewording is clean under a threshold above its F
    assert check("Which number is bigger, 268 or 673?", rouge_threshold=0.86) == [None]


def test_a_question_inside_a_longer_instruction_is_caught_by_the_ngram_check_only():
    text = "Please answer carefully and explain each step: " + QUESTION  # 7 + 7 tokens
    [m] = check(text)
    # ROUGE-L alone misses it: LCS 7, P = 7/14, R = 7/7, F = 2/3
    assert m.max_similarity == pytest.approx(2 / 3, abs=1e-6) and m.shared_ngram == "which number is larger 268 or 673"
    assert m.most_similar == QUESTION


def test_long_texts_need_a_shared_13_gram():
    # 13 consecutive tokens of the story ("a lion who ... the other"), the rest unrelated
    shared = "Explain why a lion who learns to share the food he hunts with the other lions matters"
    near_miss = "Explain why a lion who learns to share the food he hunts with my cat matters"  # 11 tokens shared
    m, clean = check(shared, near_miss)
    assert m is not None and m.shared_ngram == "a lion who learns to share the food he hunts with the other"
    assert m.max_similarity < 0.8 and m.most_similar == STORY
    assert clean is None
    assert check(near_miss, ngram=11)[0].shared_ngram == "a lion who learns to share the food he hunts with"


def test_clean_instructions_and_short_eval_texts_pass():
    # same template, other numbers: LCS 5 of 7, F = 5/7 = 0.714; "hello there" has 2 < min_ngram tokens
    assert check("Which number is larger, 12 or 99?", "Hello there, what is 12 + 30 today?") == [None, None]
    assert check("Hello there, what is 12 + 30 today?", min_ngram=2)[0].shared_ngram == "hello there"
    assert Decontaminator([], rouge_threshold=0.8, ngram=13, min_ngram=4).check([QUESTION]) == [None]
    with pytest.raises(ValueError, match="min_ngram"):
        Decontaminator(EVAL, rouge_threshold=0.8, ngram=4, min_ngram=5)


def test_generation_rejects_planted_eval_questions_as_contaminated():
    planted = [QUESTION, "Which number is bigger, 268 or 673?", "Which number is larger, 12 or 99?"]
    examples = pl.DataFrame([{"id": "h0", "instruction": "Which number is larger, 3 or 8?", "input": ""}])
    filters = Filters(min_words=4, rouge_threshold=0.7, decontaminator=Decontaminator(
        EVAL, rouge_threshold=0.8, ngram=13, min_ngram=4))
    kept, rejected = generate_instructions(ScriptedGenerator(*planted), PromptTemplate.load(PROMPTS / "generator_hard.yaml"),
                                           examples, origin="hard", count=3, iteration=1, pool=[], filters=filters,
                                           seed=0, max_rounds=1)
    assert [k["instruction"] for k in kept] == ["Which number is larger, 12 or 99?"]
    assert [(r["instruction"], r["reason"]) for r in rejected] == [(t, "contaminated") for t in planted[:2]]
    assert rejected[0]["shared_ngram"] == "which number is larger 268 or 673" and rejected[1]["shared_ngram"] is None
    for r in rejected:
        validate(r, "rejected_instruction", "test")
    # without the check the planted question would have been kept
    kept, _ = generate_instructions(ScriptedGenerator(*planted), PromptTemplate.load(PROMPTS / "generator_hard.yaml"), examples,
                                    origin="hard", count=3, iteration=1, pool=[],
                                    filters=Filters(min_words=4, rouge_threshold=0.7), seed=0, max_rounds=1)
    assert QUESTION in [k["instruction"] for k in kept]


def test_the_run_checks_every_lm_eval_document_and_judge_question():
    sets = {"lm_eval_tasks": ["oracle"], "include_path": str(ROOT / "resources/lm_eval"),
            "judge_questions": str(ROOT / "resources/demo/eval_questions.jsonl")}
    texts = eval_texts(sets)
    assert len(texts) == 60 + 60 + 60  # oracle_gen, oracle_mc (their doc_to_text) and the judge's questions
    assert "Sort these numbers in ascending order: 8, 12, 11, 47." in texts  # oracle_gen's first document
    assert "Which number is larger, 57 or 87?" in texts  # oracle_mc's
    assert 'Repeat the word "shark".' in texts  # the judge's
    cfg = {"enabled": True, "rouge_threshold": 0.8, "ngram": 13, "min_ngram": 4}
    check = decontaminator({**sets, "lm_eval_tasks": None}, cfg)
    assert len(check.texts) == 60  # the judge's only
    assert check.check(['Repeat the word "shark".', "What is 12 + 30 today?"])[1] is None
    assert decontaminator(sets, {**cfg, "enabled": False}) is None
