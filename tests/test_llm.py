import json
import os
import subprocess
import sys

import pytest

from lionflow.llm import LLMFailure, ResponseCache, Role, request_key
from lionflow.prompts import PromptTemplate

from conftest import PROMPTS, llm_config, make_llm, make_role


def _teacher_requests(instructions):
    t = PromptTemplate.load(PROMPTS / "teacher.yaml")
    return [(t.messages(instruction=i), {}) for i in instructions]


def test_teacher_through_openai_client_and_cache(oracle_llm, tmp_path):
    llm = oracle_llm("teacher", {"temperature": 0.7, "max_tokens": 64})
    replies = llm.complete(_teacher_requests(["What is 23 + 72?", "Reverse the word \"lion\"."]))
    assert [r.content for r in replies] == ["95", "noil"]
    assert llm.stats.paid == 2 and llm.stats.cache_hits == 0

    # A new process (new cache object) pays nothing for the same requests...
    again = oracle_llm("teacher", {"temperature": 0.7, "max_tokens": 64})
    assert [r.content for r in again.complete(_teacher_requests(["What is 23 + 72?"]))] == ["95"]
    assert again.stats.paid == 0 and again.stats.cache_hits == 1
    # ...but a change of any sampling parameter is a different request.
    other = oracle_llm("teacher", {"temperature": 0.2, "max_tokens": 64})
    other.complete(_teacher_requests(["What is 23 + 72?"]))
    assert other.stats.paid == 1


def test_identical_requests_in_flight_are_sent_once(oracle_llm):
    llm = oracle_llm()
    replies = llm.complete(_teacher_requests(["What is 2 + 2?"] * 5))
    assert {r.content for r in replies} == {"4"}
    assert llm.stats.requests == 5 and llm.stats.paid == 1


def test_cache_survives_a_torn_line(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("k1", {"content": "a", "finish_reason": "stop"})
    cache.close()
    part = next(tmp_path.glob("part-*.jsonl"))
    with open(part, "a") as f:
        f.write('{"key": "k2", "content": "half')  # a writer killed mid-line
    fresh = ResponseCache(tmp_path)
    assert fresh.get("k1")["content"] == "a" and fresh.get("k2") is None
    fresh.put("k2", {"content": "b", "finish_reason": "stop"})  # new writers use their own part file
    fresh.close()
    assert ResponseCache(tmp_path).get("k2")["content"] == "b"


def _dead_writers_part(directory, records: list[bytes]) -> "os.PathLike":
    """A part file as a process that has exited left it (pid 2**22 + 1 is never alive)."""
    from lionflow.llm.partfiles import HOST

    part = directory / f"part-{HOST}-{2**22 + 1}-deadbeef.jsonl"
    part.write_bytes(b"".join(records))
    return part


def _record(i: int) -> bytes:
    return json.dumps({"key": request_key("u", "m", [{"role": "user", "content": str(i)}], {}),
                       "content": f"answer {i}", "finish_reason": "stop"}).encode() + b"\n"


def test_a_finished_part_is_indexed_once_then_loaded_without_scanning(tmp_path, caplog):
    """The index of a part whose writer is gone (key -> offset and length; damaged lines) is saved by the
    first job that reads it; later jobs load it and read an answer from disk only when asked for it."""
    records = [_record(i) for i in range(50)]
    records[7] = b'{"key": "torn in the middle\n'
    part = _dead_writers_part(tmp_path, records + [b'{"key": "torn tail'])
    first = ResponseCache(tmp_path)
    assert len(first) == 49
    idx = tmp_path / "index" / f"{part.name}.idx"
    assert idx.is_file() and f"{part}:8: not JSON" in caplog.text
    caplog.clear()
    scanned = []
    original = ResponseCache._scan
    ResponseCache._scan = lambda self, *a: scanned.append(a) or original(self, *a)
    try:
        later = ResponseCache(tmp_path)
        assert len(later) == 49 and scanned == []                 # from the index alone
    finally:
        ResponseCache._scan = original
    assert later.get(json.loads(records[3])["key"])["content"] == "answer 3"
    assert later.get(json.loads(records[49])["key"])["content"] == "answer 49"
    assert later.damaged == [(str(part), 8, later.damaged[0][2])] and f"{part}:8" in caplog.text
    # a lookup checks what it reads: a record damaged after indexing is reported, then a miss
    data = part.read_bytes()
    at = data.index(b"answer 10")
    part.write_bytes(data[:at] + b"\xff" + data[at + 1:])
    assert ResponseCache(tmp_path).get(json.loads(records[10])["key"]) is None


def test_an_index_that_no_longer_matches_its_part_is_rebuilt(tmp_path):
    part = _dead_writers_part(tmp_path, [_record(i) for i in range(5)])
    assert len(ResponseCache(tmp_path)) == 5
    part.write_bytes(part.read_bytes() + _record(5))        # a part copied over from elsewhere, say
    assert len(ResponseCache(tmp_path)) == 6
    assert len(ResponseCache(tmp_path)) == 6


def test_request_key_covers_model_messages_and_params():
    m = [{"role": "user", "content": "x"}]
    base = request_key("http://a/v1", "m", m, {"temperature": 0.7})
    assert base == request_key("http://a/v1/", "m", m, {"temperature": 0.7})
    assert base != request_key("http://a/v1", "m2", m, {"temperature": 0.7})
    assert base != request_key("http://a/v1", "m", [{"role": "user", "content": "y"}], {"temperature": 0.7})
    assert base != request_key("http://a/v1", "m", m, {"temperature": 0.7, "seed": 1})


def test_failed_request_is_a_failure_value_not_text(tmp_path):
    # Nothing listens on this port: connection errors, retried, then reported as failures.
    llm = make_llm("http://127.0.0.1:9/v1", tmp_path / "c", endpoint="dead", model="m", max_retries=1, timeout_s=2)
    [reply] = llm.complete(_teacher_requests(["What is 2 + 2?"]))
    assert isinstance(reply, LLMFailure) and "Connection" in reply.error
    assert llm.stats.failures == 1 and len(ResponseCache(tmp_path / "c")) == 0


def test_api_key_only_from_environment(monkeypatch, tmp_path):
    endpoint = make_role("https://api.example.invalid/v1", endpoint="openai", api_key_env="LIONFLOW_TEST_KEY").endpoint
    monkeypatch.delenv("LIONFLOW_TEST_KEY", raising=False)
    with pytest.raises(RuntimeError, match="LIONFLOW_TEST_KEY is not set"):
        endpoint.api_key()
    monkeypatch.setenv("LIONFLOW_TEST_KEY", "sk-secret-123")
    assert endpoint.api_key() == "sk-secret-123"


def test_role_from_config():
    role = Role.from_config({"llm": llm_config("builtin://oracle", endpoint="e", model="m", max_concurrency=3,
                                               params={"temperature": 0.2})}, "referee")
    assert role.endpoint.max_concurrency == 3 and role.params == {"temperature": 0.2} and role.model == "m"
    # The schema's defaults, and only those: the role carries no second copy.
    assert (role.endpoint.timeout_s, role.endpoint.max_retries, role.mode, role.lease_s) == (120, 5, "online", 30)
    with pytest.raises(KeyError):
        Role.from_config({"llm": {"endpoints": {"e": {"base_url": "x"}}, "referee": {"endpoint": "e", "model": "m"}}},
                         "referee")
    with pytest.raises(ValueError, match="llm.budget_usd is set but llm.ledger_dir is null"):
        make_role("builtin://oracle", budget_usd=1.0, price=(1.0, 1.0))


def test_the_llm_package_knows_no_server_of_its_own(tmp_path):
    """lionflow.llm never imports the oracle: a builtin:// endpoint is reached through the transport
    given by whoever builds the client from config (lionflow.smk.llm_for)."""
    code = "import sys, lionflow.llm, lionflow.llm.batch; print(sorted(m for m in sys.modules if 'oracle' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from lionflow.llm import make_client

    with pytest.raises(RuntimeError, match=r"builtin://oracle \(llm.endpoints.o\) is served in-process"):
        make_client(make_role("builtin://oracle", endpoint="o").endpoint)
