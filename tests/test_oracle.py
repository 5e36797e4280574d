"""Behaviour of the oracle LLM: tasks, roles, the OpenAI-compatible app and server."""
from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx2
import jinja2
import openai
import pytest
import yaml

from lionflow.artifacts import read_jsonl
from lionflow.oracle import datasets, roles
from lionflow.oracle.app import create_app
from lionflow.oracle.roles import respond
from lionflow.oracle.tasks import BY_NAME, FAMILIES, grade, parse_problem, problem_key, sample_problem

ROOT = Path(__file__).resolve().parents[1]
SORT = ("Sort the numbers in the input in ascending order.", "5, 3, 9")


def render(name: str, **kw) -> list[dict]:
    """Messages built from our real prompt template."""
    d = yaml.safe_load((ROOT / "resources/prompts" / f"{name}.yaml").read_text())
    user = jinja2.Environment().from_string(d["user"]).render(**kw)
    return [{"role": "system", "content": d["system"]}, {"role": "user", "content": user}]


def scores(reply: str) -> tuple[int, int]:
    lines = reply.splitlines()
    assert lines[-2].startswith("Assistant 1: ") and lines[-1].startswith("Assistant 2: ")
    return int(lines[-2].split(": ")[1]), int(lines[-1].split(": ")[1])


# ---------------------------------------------------------------- tasks

def test_families_ordered_common_to_rare():
    assert [f.rarity for f in FAMILIES] == list(range(len(FAMILIES)))
    assert len(FAMILIES) >= 12 and all(f.max_level >= 3 for f in FAMILIES)


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_round_trip_every_family_and_level(family):
    rng = random.Random(family)
    for level in range(1, BY_NAME[family].max_level + 1):
        for i in range(150):
            p = sample_problem(rng, family, level, split=i % 2 == 1)
            assert p.level == level and p.answer
            assert parse_problem(p.instruction, p.input) == p
            assert parse_problem(f"  {p.instruction}\n", f" {p.input} ") == p   # whitespace-tolerant


def test_examples_and_unknown():
    assert parse_problem(*SORT).answer == "3, 5, 9"
    assert parse_problem('Reverse the word "lion".').answer == "noil"
    assert parse_problem('Write the word "lion" in uppercase.').answer == "LION"
    assert parse_problem("What is 23 + 72?").answer == "95"
    assert parse_problem("Is 14 even or odd?").answer == "even"
    assert parse_problem("Tom has 3 apples and buys 5 more. How many apples does Tom have now?").answer == "8"
    for junk in ["", "Write a poem about lions.", "What is 2 + ?", "Which number is larger, 4 or 4?"]:
        assert parse_problem(junk) is None


def test_grade():
    p = parse_problem("What is 23 + 72?")
    assert grade(p, "95") == grade(p, " 95. ") == 1
    assert 0.5 < grade(p, "94") < 1 and grade(p, "94") > grade(p, "50") > 0
    assert grade(p, "") == grade(p, "banana") == 0
    r = parse_problem('Reverse the word "lion".')
    assert grade(r, "Noil.") == 1 and 0 < grade(r, "noli") < 1 and grade(r, "xyz") == 0
    assert grade(parse_problem('Write the word "lion" in uppercase.'), "lion") == 0.5
    s = parse_problem(*SORT)
    assert grade(s, "3, 5, 9") == 1 and 0 < grade(s, "3, 9") < 1 and grade(s, "") == 0
    e = parse_problem("Which number is larger, 12 or 40?")
    assert grade(e, "40") == 1 and grade(e, "12") == 0


# ---------------------------------------------------------------- roles

def test_teacher():
    assert respond(render("teacher", instruction=SORT[0], input=SORT[1]), {}) == ("3, 5, 9", "stop")
    assert respond(render("teacher", instruction='Repeat the word "owl".', input=""), {})[0] == "owl"
    assert respond(render("teacher", instruction="Write a sonnet.", input=""), {})[0] == roles.CANNOT


def test_referee_bias_cancels_when_averaged():
    good, bad = "3, 5, 9", "3, 9"
    ab = respond(render("referee", instruction=SORT[0], input=SORT[1], answer_1=good, answer_2=bad), {})[0]
    ba = respond(render("referee", instruction=SORT[0], input=SORT[1], answer_1=bad, answer_2=good), {})[0]
    (g1, b2), (b1, g2) = scores(ab), scores(ba)
    p = parse_problem(*SORT)
    ug, ub = 1 + round(8 * grade(p, good)), 1 + round(8 * grade(p, bad))
    assert (g1, g2, b1, b2) == (ug + 1, ug, ub + 1, ub)       # position 1 gets +1
    assert (g1 + g2) / 2 - (b1 + b2) / 2 == ug - ub           # averaging removes the bias
    assert len(ab.splitlines()) == 3


def test_referee_unknown_instruction_is_even():
    reply = respond(render("referee", instruction="Write a haiku.", input="", answer_1="a", answer_2="b"), {})[0]
    assert scores(reply) == (6, 5)


def gen(mode: str, instruction: str, input: str = "", seed=None) -> str:
    content, finish = respond(render(f"generator_{mode}", instruction=instruction, input=input), {"seed": seed})
    assert finish == "stop" and "\n" not in content
    return content


def test_generator_deterministic_and_seed_sensitive():
    assert gen("hard", *SORT, seed=1) == gen("hard", *SORT, seed=1)
    assert len({gen("hard", *SORT, seed=s) for s in range(6)}) >= 5
    assert gen("easy", "What is 31 + 4?") == gen("easy", "What is 31 + 4?")


def test_generator_hard_keeps_family_easy_goes_rarer():
    rng = random.Random(0)
    for f in FAMILIES:
        ex = sample_problem(rng, f.name, 2, split=True)
        for s in range(5):
            hard = parse_problem(gen("hard", ex.instruction, ex.input, seed=s))
            assert hard and hard.family == f.name and ex.level <= hard.level <= ex.level + 1 and not hard.input
            easy = parse_problem(gen("easy", ex.instruction, ex.input, seed=s))
            assert easy and easy.level <= ex.level and not easy.input
            if f is not FAMILIES[-1]:
                assert BY_NAME[easy.family].rarity > f.rarity
            else:
                assert easy.family != f.name
    assert parse_problem(gen("hard", "Write a poem about the sea.", seed=0))   # still a valid task


def test_max_tokens_truncates():
    msgs = render("referee", instruction=SORT[0], input=SORT[1], answer_1="x", answer_2="y")
    content, finish = respond(msgs, {"max_tokens": 4})
    assert finish == "length" and len(content.split()) == 4
    assert respond(msgs, {"max_tokens": 500})[1] == "stop"


# ---------------------------------------------------------------- API

def test_app_through_async_openai_client():
    async def go():
        client = openai.AsyncOpenAI(base_url="http://oracle.local/v1", api_key="unused",
            http_client=openai.DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=create_app())))
        r = await client.chat.completions.create(
            model="oracle", messages=render("teacher", instruction=SORT[0], input=SORT[1]),
            temperature=0.7, max_tokens=64, seed=3)
        assert r.object == "chat.completion" and r.model == "oracle"
        assert r.choices[0].message.content == "3, 5, 9" and r.choices[0].finish_reason == "stop"
        assert r.usage.completion_tokens == 3 and r.usage.total_tokens > 3
        r = await client.chat.completions.create(
            model="oracle", max_completion_tokens=2,
            messages=render("referee", instruction=SORT[0], input=SORT[1], answer_1="a", answer_2="b"))
        assert r.choices[0].finish_reason == "length"
        assert [m.id for m in (await client.models.list()).data] == ["oracle", "oracle-1"]
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="oracle", messages=[{"role": "user", "content": "hi"}], n=2)
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="oracle", messages=[])
        # Raw requests: malformed JSON and unknown routes.
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_app()),
                                      base_url="http://oracle.local") as raw:
            bad = await raw.post("/v1/chat/completions", content=b"{not json")
            assert bad.status_code == 400 and "error" in bad.json()
            assert (await raw.get("/v1/nothing")).status_code == 404

    asyncio.run(go())


def test_localhost_server_subprocess():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lionflow.oracle", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "server did not start"
                time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="oracle", messages=[{"role": "user", "content": "What is 2 + 3?"}])
        assert r.choices[0].message.content == "5"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert f"http://127.0.0.1:{port}/v1" in out


# ---------------------------------------------------------------- demo data

def test_datasets_deterministic_disjoint_and_parseable():
    pool = datasets.make_seed_pool(240, 1)
    assert pool == datasets.make_seed_pool(240, 1) and pool[0]["id"] == "seed-0001"
    assert len({(r["instruction"], r["input"]) for r in pool}) == 240
    probs = [parse_problem(r["instruction"], r["input"]) for r in pool]
    assert all(probs) and sum(p.level <= 2 for p in probs) > 0.6 * len(probs)
    assert any(r["input"] for r in pool)
    keys = {datasets.problem_key(r["instruction"], r["input"]) for r in pool}
    for r in datasets.make_eval_gen(60, 2):
        p = parse_problem(r["question"])
        assert p.answer == r["answer"] and datasets.problem_key(r["question"]) not in keys
    for r in datasets.make_eval_mc(60, 3):
        assert parse_problem(r["question"]).answer == r["choices"][r["label"]]
        assert datasets.problem_key(r["question"]) not in keys
    # The committed files are what the CLI writes.
    committed = [json.loads(line) for line in (ROOT / "resources/demo/seed_instructions.jsonl").read_text().splitlines()]
    assert committed == pool


def test_the_dataset_builder_writes_every_committed_demo_file(tmp_path, capsys):
    """One builder (lionflow.oracle.datasets) for the seed pool, the lm-eval data and the judge's questions."""
    files = ["resources/demo/seed_instructions.jsonl", "resources/lm_eval/data/oracle_gen.jsonl",
             "resources/lm_eval/data/oracle_mc.jsonl", "resources/demo/eval_questions.jsonl",
             "resources/lm_eval/data/oracle_levels.jsonl"]
    datasets.main(["--root", str(tmp_path)])
    for f in files:
        assert (tmp_path / f).read_text() == (ROOT / f).read_text(), f



def test_the_experiments_held_out_suite_covers_every_family_at_every_level():
    """oracle_levels: 5 questions of every family at every level the world can hold out (parity at level
    1 has 9 tasks, all in the seed pool), disjoint from the seed pool, the other eval sets and the judge's."""
    data = ROOT / "resources/lm_eval/data"
    levels = [json.loads(line) for line in (data / "oracle_levels.jsonl").open()]
    cells = Counter((r["family"], r["level"]) for r in levels)
    world = {(f.name, level) for f in FAMILIES for level in range(1, f.max_level + 1)}
    assert set(cells) == world - {("parity", 1)} and set(cells.values()) == {5}
    seed_pool = {problem_key(r["instruction"], r.get("input") or "")
                 for r in read_jsonl(ROOT / "resources/demo/seed_instructions.jsonl", "seed_instruction")}
    assert {("parity", (("n", str(n)),)) for n in range(1, 10)} <= seed_pool  # why parity L1 is missing
    others = {problem_key(json.loads(line)["question"]) for name in ("oracle_gen", "oracle_mc")
              for line in (data / f"{name}.jsonl").open()}
    judged = {problem_key(q["instruction"], q["input"])
              for q in read_jsonl(ROOT / "resources/demo/eval_questions.jsonl", "eval_question")}
    keys = [problem_key(r["question"]) for r in levels]
    assert len(set(keys)) == len(keys) and not set(keys) & (seed_pool | others | judged)
