"""Every paid answer worth training on, and a stage that stops paying the moment it is failing the same way.

Against the localhost test server, counting what it answered (paid) and what it was sent: answers cut
at max_tokens, empty or refused are excluded from training and counted; a stage whose first attempts
all fail the same way (an HTML page, JSON without choices, a body that is not JSON, an HTTP error, a
hanging endpoint, a referee reply without score lines, empty teacher answers) stops after at most
llm.circuit_breaker.first_n attempts plus those in flight (max_concurrency), naming the kind, the role,
the endpoint and its URL and an example reply; an unreadable reply is a named failure, retried within
the endpoint's max_retries.
"""
from __future__ import annotations

import time

import pytest

from lionflow.discrimination import score_pairs
from lionflow.generation import check_next_train_pool
from lionflow.imitation import excluded_counts, teacher_answers
from lionflow.llm import CircuitOpen, Completion, LLMFailure
from lionflow.oracle.datasets import sample_pool
from lionflow.prompts import PromptTemplate

from conftest import PROMPTS, llm_config
from conftest import make_llm as make_client
from testserver import ServerConfig, TestServer

TEACHER = PromptTemplate.load(PROMPTS / "teacher.yaml")
FIRST_N, CONCURRENCY = 8, 4
CHECKS = llm_config("http://unused/v1")["answer_checks"]   # the schema's defaults


def make_llm(server, tmp_path, role="teacher", *, first_n=FIRST_N, no_progress_s=None, retries=5, timeout_s=5.0,
             api_key_env=None, model="oracle-1"):
    return make_client(server.url, tmp_path / "cache", role, params={"max_tokens": 64}, model=model,
                       max_concurrency=CONCURRENCY, max_retries=retries, timeout_s=timeout_s, api_key_env=api_key_env,
                       circuit_breaker={"first_n": first_n, "no_progress_s": no_progress_s})


def pool(n):
    return [{"id": f"i{k}", "instruction": p.instruction, "input": p.input} for k, p in enumerate(sample_pool(n, seed=0))]


def sent(server) -> int:
    """Chat requests the server received (every attempt)."""
    return sum(1 for e in server.log() if e["path"] == "/v1/chat/completions")


def paid(server) -> int:
    return sum(1 for e in server.log() if e["outcome"] == "ok")


def assert_names_its_place(message: str, server, role="teacher"):
    assert f"{role} via llm.endpoints.test ({server.url})" in message, message


# ----------------------------------------------------------------------------------- the circuit breaker
BREAKING = [
    # (case, server config, what the error names)
    ("an HTML page", dict(fault_rate=1.0, fault_kinds=("html",), max_faults_per_request=99),
     ["unreadable reply (HTML page)", "Service unavailable"]),
    ("JSON without choices", dict(fault_rate=1.0, fault_kinds=("no_choices",), max_faults_per_request=99),
     ["unreadable reply (JSON without choices)", "queued"]),
    ("a body cut mid-JSON", dict(fault_rate=1.0, fault_kinds=("malformed_json",), max_faults_per_request=99),
     ["unreadable reply (not JSON)", "Bad gateway"]),
    ("HTTP 503 on every request", dict(fault_rate=1.0, fault_kinds=("503",), max_faults_per_request=99),
     ["InternalServerError (HTTP 503)", "injected fault 503"]),
    ("a model the endpoint no longer serves", dict(models=("another-model",)),
     ["NotFoundError (HTTP 404)", "does not exist"]),
]


@pytest.mark.parametrize("case, config, fragments", BREAKING, ids=[c[0] for c in BREAKING])
def test_a_systematic_failure_stops_the_stage_within_first_n_plus_in_flight(tmp_path, case, config, fragments):
    with TestServer(ServerConfig(**config)) as server:
        llm = make_llm(server, tmp_path)
        with pytest.raises(CircuitOpen) as info:
            teacher_answers(llm, TEACHER, pool(40), max_failure_rate=0.0, checks=CHECKS)
        n_sent, n_paid = sent(server), paid(server)
    message = str(info.value)
    assert n_sent <= FIRST_N + CONCURRENCY, f"{case}: {n_sent} requests sent"   # not 40 x (1 + 5 retries)
    assert n_paid == 0
    assert_names_its_place(message, server)
    for fragment in [f"the first {FIRST_N} requests all failed the same way", "llm.circuit_breaker.first_n=8",
                     *fragments]:
        assert fragment in message, f"{case}: {fragment!r} not in {message}"


def test_an_api_key_refused_stops_after_first_n_without_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("LIONFLOW_TEST_KEY", "sk-wrong-key-123")
    with TestServer(ServerConfig(api_key="sk-right")) as server:
        llm = make_llm(server, tmp_path, api_key_env="LIONFLOW_TEST_KEY")
        with pytest.raises(CircuitOpen, match=r"AuthenticationError \(HTTP 401\)") as info:
            llm.complete([(TEACHER.messages(instruction=p["instruction"], input=p["input"]), {}) for p in pool(30)])
        assert sent(server) <= FIRST_N + CONCURRENCY
    assert "sk-wrong-key-123" not in str(info.value)
    assert_names_its_place(str(info.value), server)


def test_a_hanging_endpoint_stops_after_first_n_timeouts(tmp_path):
    """Each request would otherwise wait timeout_s x (1 + max_retries) and the stage that x pool / concurrency."""
    config = ServerConfig(fault_rate=1.0, fault_kinds=("timeout",), max_faults_per_request=99, hang_s=20)
    with TestServer(config) as server:
        llm = make_llm(server, tmp_path, timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(CircuitOpen, match=r"\(APITimeoutError\)") as info:
            teacher_answers(llm, TEACHER, pool(30), max_failure_rate=0.0)
        elapsed = time.monotonic() - started
        assert sent(server) <= FIRST_N + CONCURRENCY and paid(server) == 0
    assert elapsed < 10, elapsed
    assert_names_its_place(str(info.value), server)


def test_no_progress_for_no_progress_s_stops_the_stage(tmp_path):
    """Breaker off (first_n 0), a server that never answers within the long timeout: the deadline stops it."""
    config = ServerConfig(fault_rate=1.0, fault_kinds=("timeout",), max_faults_per_request=99, hang_s=20)
    with TestServer(config) as server:
        llm = make_llm(server, tmp_path, first_n=0, no_progress_s=1.0, timeout_s=15.0)
        started = time.monotonic()
        with pytest.raises(CircuitOpen, match=r"no answer arrived for \d+ s.*no_progress_s=1") as info:
            llm.complete([(TEACHER.messages(instruction=p["instruction"], input=p["input"]), {}) for p in pool(20)])
        assert time.monotonic() - started < 5
        assert sent(server) <= CONCURRENCY
    assert_names_its_place(str(info.value), server)


def test_a_referee_prompt_without_score_lines_costs_first_n_plus_in_flight(tmp_path):
    """The issue's case, had it passed the preflight: 18 pairs x 2 orders x (1 + 2 parse retries) = 108 paid."""
    template = tmp_path / "referee.yaml"
    text = (PROMPTS / "referee.yaml").read_text()
    asked = "Then end your reply with\n  exactly these two lines:\n  Assistant 1: <score>\n  Assistant 2: <score>"
    assert asked in text
    template.write_text(text.replace(asked, "Then say which is better."))
    bad = PromptTemplate.load(template)
    items = pool(18)
    teacher = [{**p, "answer": f"teacher {i}"} for i, p in enumerate(items)]
    student = [{**p, "answer": f"student {i}"} for i, p in enumerate(items)]
    with TestServer(ServerConfig(content="Assistant 1 is better: it is more precise.")) as server:
        referee = make_llm(server, tmp_path, "referee")
        with pytest.raises(CircuitOpen, match="unparseable reply") as info:
            score_pairs(referee, bad, teacher, student, parse_retries=2)
        assert paid(server) <= FIRST_N + CONCURRENCY
    assert_names_its_place(str(info.value), server, "referee")
    assert "Assistant 1 is better" in str(info.value)


def test_a_teacher_answering_empty_text_stops_after_first_n_paid(tmp_path):
    with TestServer(ServerConfig(content="")) as server:
        llm = make_llm(server, tmp_path)
        with pytest.raises(CircuitOpen, match=r"\(empty answer\)") as info:
            teacher_answers(llm, TEACHER, pool(40), max_failure_rate=0.0, checks=CHECKS)
        assert paid(server) <= FIRST_N + CONCURRENCY
    assert_names_its_place(str(info.value), server)


def test_the_breaker_stands_down_once_a_request_succeeds(tmp_path):
    """Occasional faults (every kind, in turn) are retried; the first answer disarms the breaker."""
    config = ServerConfig(fault_rate=0.5, fault_kinds=("html", "503"), max_faults_per_request=2, seed=2)
    with TestServer(config) as server:
        llm = make_llm(server, tmp_path)
        answers, failed = teacher_answers(llm, TEACHER, pool(30), max_failure_rate=0.0, checks=CHECKS)
        assert len(answers) == 30 and not failed and paid(server) == 30


# ----------------------------------------------------------------------------------- unreadable replies
@pytest.mark.parametrize("kind, what, body", [("html", "HTML page", "<!DOCTYPE html>"),
                                              ("no_choices", "JSON without choices", '"detail": "queued"'),
                                              ("malformed_json", "not JSON", "<html>Bad gateway")])
def test_an_unreadable_reply_is_a_named_failure_retried_within_max_retries(tmp_path, kind, what, body):
    config = ServerConfig(fault_rate=1.0, fault_kinds=(kind,), max_faults_per_request=99)
    with TestServer(config) as server:
        llm = make_llm(server, tmp_path, first_n=0, retries=2)
        [reply] = llm.complete([(TEACHER.messages(instruction="Add 2 and 3.", input=""), {})], ids=["s1"])
        assert sent(server) == 3 and paid(server) == 0                  # 1 + max_retries, then given up
    assert isinstance(reply, LLMFailure) and reply.kind == f"unreadable reply ({what})"
    assert_names_its_place(reply.error, server)
    assert "after 3 attempt(s)" in reply.error and "for s1" in reply.error and body in reply.error
    assert llm.stats.retries == 2 and llm.stats.failures == 1


# ----------------------------------------------------------------------------------- answers worth training on
@pytest.mark.parametrize("case, config, kind", [
    ("cut at max_tokens", dict(finish_reason="length"), "cut"),
    ("empty text", dict(content="  \n"), "empty"),
    ("a refusal", dict(content="I'm sorry, but I can't help with that request."), "refusal"),
    ("a content filter", dict(finish_reason="content_filter"), "refusal"),
])
def test_cut_empty_and_refused_answers_are_excluded_and_counted(tmp_path, case, config, kind):
    """Breaker off: every answer is paid, none is trained on, each is counted and named; beyond
    max_excluded_rate the stage fails with a summary by kind."""
    with TestServer(ServerConfig(**config)) as server:
        llm = make_llm(server, tmp_path, first_n=0)
        answers, failed = teacher_answers(llm, TEACHER, pool(6), max_failure_rate=0.0,
                                          checks={**CHECKS, "max_excluded_rate": 1.0})
        assert paid(server) == 6
        assert answers == [] and excluded_counts(failed) == {**dict.fromkeys(("empty", "cut", "refusal"), 0), kind: 6}
        assert all(f["kind"] == f"{kind} answer" and "excluded from training" in f["error"] for f in failed)
        assert_names_its_place(failed[0]["error"], server)
        with pytest.raises(Exception, match=rf"teacher failed on 6 of 6 answers .*llm.answer_checks.max_excluded_rate="
                                            rf"5.0% \(6 x {kind} answer\)"):
            teacher_answers(llm, TEACHER, pool(6), max_failure_rate=0.0, checks=CHECKS)
        assert paid(server) == 6                                       # the rerun read the cache
        # policy keep: trained on as before
        kept, failed = teacher_answers(llm, TEACHER, pool(6), max_failure_rate=0.0, checks={**CHECKS, kind: "keep"})
        assert len(kept) == 6 and not failed and paid(server) == 6


class _Scripted:
    """A teacher stand-in answering each request with the next (content, finish_reason)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.role = type("R", (), {"name": "teacher", "model": "m", "where": lambda self: "teacher via x (y)"})()

    def complete(self, requests, desc="", ids=None, check=None):
        return [Completion(c, f, False) for c, f in self.replies[:len(requests)]]


def test_a_mixed_pool_trains_on_the_good_answers_only():
    replies = [("5", "stop"), ("The list sorted: 1 2", "length"), ("", "stop"), ("As an AI, I cannot do that.", "stop"),
               ("I can't believe how easy: 7", "stop"), ("abc", "stop")]
    answers, failed = teacher_answers(_Scripted(replies), TEACHER, pool(6), max_failure_rate=0.0,
                                      checks={**CHECKS, "max_excluded_rate": 0.5})
    assert [a["answer"] for a in answers] == ["5", "I can't believe how easy: 7", "abc"]
    assert excluded_counts(failed) == {"empty": 1, "cut": 1, "refusal": 1}
    assert [f["id"] for f in failed] == ["i1", "i2", "i3"]


# ----------------------------------------------------------------------------------- the next train pool
def test_an_empty_next_train_pool_fails_at_generation_naming_the_filters():
    rejected = [{"reason": "near_duplicate"}] * 5 + [{"reason": "too_short"}] * 2
    with pytest.raises(ValueError) as info:
        check_next_train_pool({"hard": 0, "easy": 0}, {"hard": 4, "easy": 4}, rejected, "new", iteration=1)
    message = str(info.value)
    for fragment in ("iteration 1", "new_hard: 0 of 4 asked (generation.new_hard)", "5 near_duplicate, 2 too_short",
                     "iteration 2 would have nothing to train on", "pools.next_train_pool"):
        assert fragment in message, message
    check_next_train_pool({"hard": 0, "easy": 0}, {"hard": 4, "easy": 4}, rejected, "all", iteration=1)
    check_next_train_pool({"hard": 1, "easy": 0}, {"hard": 4, "easy": 4}, rejected, "new", iteration=1)


# ----------------------------------------------------------------------------------- training examples
def test_an_example_whose_answer_max_length_cuts_away_is_excluded_and_counted():
    """A paid answer with no token left to train on (its prompt fills max_length) is left out and counted,
    not trained on as an all-masked example (a NaN loss in a batch of only such examples)."""
    from lionflow.student.builtin import build_tokenizer
    from lionflow.student.train import encode_examples

    tok = build_tokenizer()
    short = {"instruction": "Add 2 and 3.", "input": "", "answer": "5"}
    long = {"instruction": "Sort these numbers: " + " ".join(str(n) for n in range(40)), "input": "", "answer": "0 1"}
    data, truncated, excluded = encode_examples(tok, [short, long, short], max_length=96)
    assert len(data) == 2 and excluded == 1 and truncated == 1
    assert all(any(label != -100 for label in f["labels"]) for f in data)
    with pytest.raises(ValueError, match=r"no training example left: 1 given, 1 of them with no answer token within "
                                         r"student.train.max_length=96"):
        encode_examples(tok, [long], max_length=96)
