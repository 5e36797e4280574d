"""Lineage: every generated instruction's chain back to its seed, the CLI and the family counts."""
import polars as pl
import pytest

from lionflow.artifacts import write_jsonl
from lionflow.generation import Filters, generate_instructions, parent_pool
from lionflow.lineage import chain, families_of, index_files, main, run_files
from lionflow.prompts import PromptTemplate

from conftest import PROMPTS, ScriptedGenerator


def _seed(i, text):
    return {"id": i, "instruction": text, "input": "", "origin": "seed", "iteration": 0, "parent_id": None,
            "max_similarity": None, "parent_pool": None, "parent_similarity": None}


def _new(i, text, parent, iteration, origin="hard", pool="hard"):
    return {"id": i, "instruction": text, "input": "", "origin": origin, "iteration": iteration, "parent_id": parent,
            "max_similarity": 0.5, "parent_pool": pool, "parent_similarity": 0.6}


SEEDS = [_seed("s-add", "What is 23 + 72?"), _seed("s-rep", 'Repeat the word "owl".'), _seed("s-poem", "Write a poem.")]
ITER1 = {"hard": [_new("it1-hard-00001", "What is 230 + 721?", "s-add", 1),
                  _new("it1-hard-00002", "Write a long poem about owls.", "s-poem", 1)],
         "easy": [_new("it1-easy-00001", 'Reverse the word "owl".', "s-rep", 1, "easy", "easy")]}
ITER2 = {"hard": [_new("it2-hard-00001", "What is 2301 + 7210?", "it1-hard-00001", 2, pool="cache")], "easy": []}


@pytest.fixture
def run(tmp_path):
    write_jsonl(tmp_path / "iter1" / "cache_pool.jsonl", SEEDS, "instruction")
    for k, new in ((1, ITER1), (2, ITER2)):
        for origin, records in new.items():
            write_jsonl(tmp_path / f"iter{k}" / f"new_{origin}.jsonl", records, "instruction")
    write_jsonl(tmp_path / "iter2" / "cache_pool.jsonl", SEEDS + ITER1["hard"] + ITER1["easy"], "instruction")
    return tmp_path


def test_chain_goes_back_to_the_seed(run):
    index = index_files(run_files(run))
    assert len(index) == 3 + 3 + 1
    assert [r["id"] for r in chain(index, "it2-hard-00001")] == ["it2-hard-00001", "it1-hard-00001", "s-add"]
    assert [r["id"] for r in chain(index, "s-rep")] == ["s-rep"]
    # hard instructions of an iteration, by seed family: oracle families, and `other` for what it cannot parse
    assert families_of(["it2-hard-00001", "it1-hard-00002", "it1-easy-00001", "s-add"], index) == {
        "add": 2, "other": 1, "repeat": 1}


def test_broken_chains_are_errors(run):
    index = index_files(run_files(run))
    with pytest.raises(KeyError, match="no instruction 'nope'"):
        chain(index, "nope")
    with pytest.raises(KeyError, match="it9: parent 'gone' is not in"):
        chain(index | {"it9": _new("it9", "x y z w", "gone", 9)}, "it9")
    looped = index | {"a": _new("a", "x y z w", "b", 3), "b": _new("b", "x y z v", "a", 3)}
    with pytest.raises(ValueError, match="loops"):
        chain(looped, "a")


def test_cli_prints_the_chain(run, capsys):
    assert main([str(run), "it2-hard-00001"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("it2-hard-00001  iteration 2, new hard instruction modelled on it1-hard-00001 "
                               "(uniform: a random cache-pool instruction), ROUGE-L 0.600")
    assert lines[1].startswith("  <- it1-hard-00001  iteration 1, new hard instruction modelled on s-add (hard)")
    assert lines[2] == "    <- s-add  seed, family add: 'What is 23 + 72?'"
    assert main([str(run), "nope"]) == 1 and "no instruction 'nope'" in capsys.readouterr().err
    assert main([str(run / "iter1")]) == 2


def test_generation_records_the_parent_pool_and_similarity():
    examples = pl.DataFrame([{"id": "c7", "instruction": "What is 1 + 2?", "input": ""}])
    kept, _ = generate_instructions(ScriptedGenerator("What is 10 + 20 here?"), PromptTemplate.load(PROMPTS / "generator_hard.yaml"),
                                    examples, origin="hard", count=1, iteration=3, pool=[],
                                    filters=Filters(min_words=4, rouge_threshold=0.7), seed=0, max_rounds=1,
                                    drawn_from=parent_pool("uniform", "hard"))
    [k] = kept
    # what is 10 20 here / what is 1 2: LCS 2, P = 2/4, R = 2/5, F = 4/9
    assert (k["parent_id"], k["iteration"], k["origin"], k["parent_pool"]) == ("c7", 3, "hard", "cache")
    assert k["parent_similarity"] == round(4 / 9, 6)
    assert parent_pool("adversarial", "easy") == "easy"
