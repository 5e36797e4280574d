"""Choosing generation.decontamination.rouge_threshold on the demo world (README, Decontamination).

Iteration-1 generation as the demo runs it (the oracle generator, the 240 seeds as hard and easy
examples, 60 + 60 requested, max_rounds 6, dedup 0.7) without the check and with it at several
ROUGE-L thresholds; per setting: instructions kept, rejections per reason, generated copies of an
evaluation problem (same oracle problem_key) among the kept and among the `contaminated`.
Usage: python benchmarks/decontamination.py [--thresholds 0.7 0.8 0.9]   (~20 s, no network)
       python benchmarks/decontamination.py --smoke    # one threshold, 8 + 8 requested, the same JSON keys
The last line printed is one JSON object with the figures per setting (benchmarks/stages.py).
"""

import argparse
import collections
import logging
import os
import tempfile
from pathlib import Path

import polars as pl
import yaml
from snakemake.utils import validate
from stages import Stages

from lionflow.artifacts import read_jsonl
from lionflow.decontamination import Decontaminator, eval_texts
from lionflow.generation import Filters, generate_instructions
from lionflow.oracle.tasks import problem_key
from lionflow.prompts import PromptTemplate
from lionflow.smk import llm_for

ROOT = Path(__file__).resolve().parents[1]
run = Stages("decontamination")
SETS = {"lm_eval_tasks": ["oracle"], "include_path": "resources/lm_eval",
        "judge_questions": "resources/demo/eval_questions.jsonl"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    ap.add_argument("--count", type=int, default=60, help="instructions requested per origin (hard, easy)")
    ap.add_argument("--max-rounds", type=int, default=6)
    args = run.parse(ap, smoke=dict(thresholds=[0.8], count=8, max_rounds=2))
    os.chdir(ROOT)  # the config's and SETS' paths are relative to the project
    logging.basicConfig(level=logging.ERROR)
    run.stage("setup")
    texts = eval_texts(SETS)
    eval_problems = {problem_key(t) for t in texts} - {None}
    seeds = read_jsonl("resources/demo/seed_instructions.jsonl", "seed_instruction")
    examples = pl.DataFrame([{"id": s["id"], "instruction": s["instruction"], "input": s.get("input", "")}
                             for s in seeds])
    with tempfile.TemporaryDirectory() as cache:
        # The demo's generator (the oracle, temperature 1.0), as a run builds it from the validated config.
        config = yaml.safe_load(open("config/config.yaml"))
        config["llm"] |= {"cache_dir": cache, "ledger_dir": f"{cache}/ledger"}
        validate(config, "config/schema.yaml")
        generator = llm_for(config, "generator")
        unchecked = None
        run.figures |= {"eval_problems": len(eval_problems), "count_per_origin": args.count,
                        "max_rounds": args.max_rounds, "settings": {}}
        for threshold in [None, *args.thresholds]:
            run.stage(f"rouge_threshold {threshold}")
            check = None if threshold is None else Decontaminator(texts, rouge_threshold=threshold, ngram=13,
                                                                  min_ngram=4)
            filters = Filters(min_words=4, rouge_threshold=0.7, leak_words=("Given Prompt", "Created Prompt"),
                              decontaminator=check)
            counts, kept_copies, caught, texts_kept = collections.Counter(), 0, 0, set()
            for origin in ("hard", "easy"):
                kept, rejected = generate_instructions(
                    generator, PromptTemplate.load(f"resources/prompts/generator_{origin}.yaml"), examples,
                    origin=origin, count=args.count, iteration=1, pool=examples["instruction"].to_list(),
                    filters=filters, seed=0, max_rounds=args.max_rounds)
                counts["kept"] += len(kept)
                texts_kept |= {k["instruction"] for k in kept}
                counts.update(r["reason"] for r in rejected)
                kept_copies += sum(problem_key(k["instruction"]) in eval_problems for k in kept)
                caught += sum(r["reason"] == "contaminated" and problem_key(r["instruction"]) in eval_problems
                              for r in rejected)
            unchecked = texts_kept if unchecked is None else unchecked
            print(f"rouge_threshold {threshold}: {dict(counts)}; eval problems kept {kept_copies}, "
                  f"rejected as contaminated {caught}; kept = the unchecked run's: {texts_kept == unchecked}")
            run.figures["settings"]["off" if threshold is None else str(threshold)] = {
                "kept": counts.pop("kept", 0), "rejected": dict(counts), "eval_problems_kept": kept_copies,
                "eval_problems_rejected_as_contaminated": caught, "kept_as_unchecked": texts_kept == unchecked}


if __name__ == "__main__":
    run.main(main)
