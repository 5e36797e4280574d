"""End to end: Snakemake runs the whole loop on a micro config; every artifact validates;
a no-op rerun has nothing to do; an evaluation-set edit reruns generation; `snakemake export` writes the
dataset and the student with their cards; a referee-prompt edit reruns only its dependants and pays no
teacher request twice; a bad seed file fails with file, line and field and writes nothing."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lionflow.artifacts import read_json, read_jsonl

from conftest import ROOT

pytestmark = pytest.mark.slow

SCHEMA_OF = {
    "train_pool.jsonl": "instruction", "cache_pool.jsonl": "instruction", "teacher_train.jsonl": "answer",
    "teacher_cache.jsonl": "answer", "student_cache.jsonl": "answer", "referee_scores.jsonl": "referee_score",
    "hard.jsonl": "scored_instruction", "easy.jsonl": "scored_instruction", "new_hard.jsonl": "instruction",
    "new_easy.jsonl": "instruction", "rejected.jsonl": "rejected_instruction",
}


def snakemake(workdir, *args, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tests/micro/config.yaml", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir, *args):
    """Rule name -> job count of a dry run."""
    out = snakemake(workdir, "-n", "--quiet", "rules", *args).stdout
    jobs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def llm_paid(run_dir, stage):
    """Requests paid for (not served from the cache) per iteration, from the stage's statistics."""
    return {p.parent.parent.name: read_json(p, "llm_stats")["paid"] for p in run_dir.glob(f"iter*/llm_stats/{stage}.json")}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("lionflow")
    for name in ("Snakefile", "rules", "workflow", "config", "resources", "tests"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / name)
    snakemake(wd)
    return wd


def test_every_artifact_validates(workdir):
    run = workdir / "results" / "micro"
    for k in (1, 2):
        for name, kind in SCHEMA_OF.items():
            read_jsonl(run / f"iter{k}" / name, kind)
        for stage in ("teacher_train", "teacher_cache", "referee", "generator"):
            read_json(run / f"iter{k}" / "llm_stats" / f"{stage}.json", "llm_stats")
    summary = read_json(run / "summary.json", "summary")
    assert [it["iteration"] for it in summary["iterations"]] == [1, 2]
    first, second = summary["iterations"]
    assert first["train_pool_size"] == first["cache_pool_size"] == 18
    assert first["n_hard"] + first["n_easy"] + first["referee_failures"] == 18
    assert second["train_pool_size"] == first["new_hard"] + first["new_easy"]
    assert second["cache_pool_size"] == 18 + second["train_pool_size"]
    assert set(summary["base_eval"]) == set(summary["final_eval"]) == {"oracle_gen", "oracle_mc", "oracle"}
    assert summary["lm_eval_groups"] == ["oracle"]
    # The referee's reliability: the oracle referee adds POSITION_BIAS to the answer shown first, which
    # is what the measured position bias must find; lineage: every hard instruction descends from a seed.
    from lionflow.oracle.roles import POSITION_BIAS
    for it in summary["iterations"]:
        assert it["referee"]["pairs"] == it["n_hard"] + it["n_easy"] + it["referee_failures"]
        assert it["referee"]["position_bias"] == POSITION_BIAS
        assert sum(it["hard_by_seed_family"].values()) == it["n_hard"]
        assert {"contaminated", "near_duplicate"} <= set(it["rejected"])
        # The hard fraction, and a warning in the summary and the split's log outside the schema's default band.
        scored = it["n_hard"] + it["n_easy"]
        assert it["hard_fraction"] == round(it["n_hard"] / scored, 4)
        outside = not 0.1 <= it["n_hard"] / scored <= 0.9
        assert (it["split_warning"] is not None) == outside, it
        log = (workdir / f"logs/micro/iter{it['iteration']}/split_hard_easy.log").read_text()
        assert (it["split_warning"] in log) if outside else "hard_fraction_band" not in log
    report = (run / "report.md").read_text()
    assert "## Referee reliability" in report and "## Hard instructions by seed family" in report
    # The Alpaca input field reaches the teacher's answers and the referee.
    scores = {r["id"]: r for r in read_jsonl(run / "iter1" / "referee_scores.jsonl", "referee_score")}
    assert scores["seed-0007"]["input"] == "68, 29, 98"
    teacher = {r["id"]: r for r in read_jsonl(run / "iter1" / "teacher_train.jsonl", "answer")}
    assert teacher["seed-0007"]["answer"] == "29, 68, 98"
    # The checkpoint loads with the Auto classes and carries its chat template.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    AutoModelForCausalLM.from_pretrained(run / "iter2" / "student")
    assert AutoTokenizer.from_pretrained(run / "iter2" / "student").chat_template


def test_nothing_to_do_after_a_complete_run(workdir):
    assert planned_jobs(workdir) == {}


def test_export_dataset_and_student_with_cards(workdir):
    """`snakemake export` on the finished run: the dataset and the model load back, and the cards' figures
    are summary.json's. Terms of use come from config (editing them reruns nothing of the loop)."""
    import datasets
    import torch
    import yaml
    from transformers import AutoModelForCausalLM

    from lionflow.provenance import config_sha256
    from lionflow.report import pct

    terms = workdir / "export.yaml"
    terms.write_text("export: {license: cc-by-nc-4.0, terms: 'Answers by the oracle: research use only.'}\n")
    export = ("--configfile", "tests/micro/config.yaml", str(terms), "--", "export")
    assert planned_jobs(workdir, *export) == {"export": 1}
    snakemake(workdir, *export)
    run = workdir / "results" / "micro"
    summary = read_json(run / "summary.json", "summary")
    prov = summary["provenance"]
    assert prov["config_sha256"] == config_sha256(prov["config"]) and prov["config"]["run"] == "micro"
    assert prov["git_commit"] is None and prov["git_dirty"] is None  # the test's copy is no git checkout

    ds = datasets.load_from_disk(run / "export" / "dataset")
    pools = {k: read_jsonl(run / f"iter{k}" / "train_pool.jsonl", "instruction") for k in (1, 2)}
    assert sorted(ds["id"]) == sorted(r["id"] for k in (1, 2) for r in pools[k])  # everything trained on, once
    rows = {r["id"]: r for r in ds}
    origins = [r["origin"] for r in rows.values()]
    first = summary["iterations"][0]
    assert (origins.count("seed"), origins.count("hard"), origins.count("easy")) == (18, first["new_hard"],
                                                                                      first["new_easy"])
    assert rows["seed-0007"]["output"] == "29, 68, 98" and rows["seed-0007"]["parent_id"] is None
    cache1 = {r["id"] for r in read_jsonl(run / "iter1" / "cache_pool.jsonl", "instruction")}
    for r in pools[2]:  # generated in iteration 1, modelled on a cache-pool instruction, trained on in iteration 2
        assert rows[r["id"]]["iteration"] == 1 and rows[r["id"]]["parent_id"] in cache1
        assert rows[r["id"]]["trained_in"] == [2] and rows[r["id"]]["origin"] == r["origin"]
    parquet = datasets.load_dataset("parquet", data_files=str(run / "export" / "dataset" / "data" / "train.parquet"))
    assert parquet["train"].num_rows == len(rows)

    exported = AutoModelForCausalLM.from_pretrained(run / "export" / "model").state_dict()
    final = AutoModelForCausalLM.from_pretrained(run / "iter2" / "student").state_dict()
    assert exported.keys() == final.keys() and all(torch.equal(exported[k], final[k]) for k in final)

    stats = [*(s for it in summary["iterations"] for s in it["llm"].values()), *summary["eval_llm"].values()]
    total = summary["llm_total"]
    for card in (run / "export" / "dataset" / "README.md", run / "export" / "model" / "README.md"):
        text = card.read_text()
        assert text.startswith("---\nlicense: cc-by-nc-4.0\n")
        assert "Answers by the oracle: research use only." in text
        assert prov["config_sha256"] in text and "git commit unknown" in text
        assert yaml.safe_load(text.split("```yaml\n")[1].split("```")[0]) == prov["config"]
        assert (f"| **total** | {total['requests']} | {total['paid']} | {total['cache_hits']} | {total['failures']} | "
                f"{total['prompt_tokens']} | {total['completion_tokens']} | {total['cost_usd']:.6f} |") in text
        for role in ("teacher", "referee", "generator", "judge", "reference"):
            mine = [s for s in stats if s["role"] == role]
            assert mine, role
            assert f"| {role} | {sum(s['requests'] for s in mine)} | {sum(s['paid'] for s in mine)} |" in text
            answers = sum(e["answers"] for s in mine for e in s["served_by"])
            assert answers > 0 and f"| {role} | builtin://oracle | " in text
        teacher_served = first["llm"]["teacher_train"]["served_by"][0]
        assert f"{teacher_served['model']}, {teacher_served['system_fingerprint'] or 'no fingerprint'}: " in text
        iter2 = next(line for line in text.splitlines() if line.startswith("| iter2 "))  # the reasoning table
        assert pct(100 * summary["final_eval"]["oracle"]) in iter2
        assert f"| torch | {prov['packages']['torch']} |" in text
    assert planned_jobs(workdir, *export) == {}


def test_bookkeeping_edits_rerun_nothing(workdir):
    """Prices, a budget, concurrency, rate limits, timeouts, retries and the ledger's place do not change
    any answer: editing them reruns no LLM or training rule (each rule's params are what changes its output)."""
    edit = workdir / "bookkeeping.yaml"
    edit.write_text(
        "llm:\n"
        "  endpoints: {oracle: {base_url: 'builtin://oracle', max_concurrency: 3, rpm: 6000, tpm: 1.0e+7,"
        " timeout_s: 30, max_retries: 2}}\n"
        "  prices: {oracle-1: {input_per_mtok: 0.15, output_per_mtok: 0.6}}\n"
        "  budget_usd: 100\n"
        "  failure_tolerance: 0.05\n"
        "  batch_poll_s: 5\n"
        "  teacher: {mode: online}\n"
        "student: {train: {checkpoint_every_steps: 7}}\n"
        "discrimination: {max_referee_failure_rate: 0.1}\n"
        "eval: {judge: {max_failure_rate: 0.2}}\n")
    assert planned_jobs(workdir, "--configfile", "tests/micro/config.yaml", str(edit)) == {}
    # while a change of what the teacher is asked reruns the teacher and what depends on it
    edit.write_text("llm: {teacher: {params: {temperature: 0.5, max_tokens: 1024}}}\n")
    jobs = planned_jobs(workdir, "--configfile", "tests/micro/config.yaml", str(edit))
    assert jobs["answer_with_teacher"] == 4 and jobs["train_student"] == 2 and "referee_answers" in jobs


def test_editing_an_eval_set_reruns_generation(workdir):
    """Generated instructions are decontaminated against the evaluation sets: an edit of one reruns generation."""
    questions = workdir / "resources" / "demo" / "eval_questions.jsonl"
    before, text = questions.stat(), questions.read_text()
    # an edit (Snakemake reruns nothing for a newer file whose content checksum is unchanged)
    questions.write_text(text.replace("Repeat the word", "Please repeat the word", 1))
    try:
        jobs = planned_jobs(workdir)
    finally:
        questions.write_text(text)
        os.utime(questions, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert jobs["generate_instructions"] == 2
    assert planned_jobs(workdir) == {}


def test_editing_the_referee_prompt_reruns_only_its_dependants(workdir):
    run = workdir / "results" / "micro"
    teacher_answers_before = (run / "iter2" / "teacher_train.jsonl").read_text()
    prompt = workdir / "resources" / "prompts" / "referee.yaml"
    prompt.write_text(prompt.read_text().replace("fair and strict referee", "fair, strict referee"))
    jobs = planned_jobs(workdir)
    assert jobs["referee_answers"] == 2 and "build_base_student" not in jobs and "init_pools" not in jobs
    # Iteration 1's teacher answers and training do not depend on the referee.
    assert jobs.get("answer_with_teacher", 0) == 2 and jobs.get("train_student", 0) == 1
    assert "evaluate_student" in jobs and jobs["evaluate_student"] == 1  # only the final checkpoint
    snakemake(workdir)
    # New prompt, new requests: iteration 1 pays for all of them (iteration 2 may reuse some of
    # iteration 1's, where the student answered a cache-pool instruction the same way).
    assert llm_paid(run, "referee")["iter1"] == 2 * 18
    assert llm_paid(run, "teacher_train")["iter2"] == 0  # same instructions: all from the cache
    assert llm_paid(run, "teacher_cache")["iter2"] == 0
    assert (run / "iter2" / "teacher_train.jsonl").read_text() == teacher_answers_before


def test_bad_seed_file_names_file_line_and_field(workdir):
    seeds = workdir / "tests" / "micro" / "bad_seeds.jsonl"
    seeds.write_text('{"id": "a", "instruction": "What is 2 + 2?"}\n{"id": "b", "input": "x"}\n')
    (workdir / "bad.yaml").write_text("run: bad\ndata: {seed_instructions: tests/micro/bad_seeds.jsonl}\n")
    proc = snakemake(workdir, "--configfile", "tests/micro/config.yaml", "bad.yaml", check=False)
    assert proc.returncode != 0
    # the preflight finds it when the workflow is parsed, before any job runs
    assert "data.seed_instructions: tests/micro/bad_seeds.jsonl:2: field 'instruction'" in proc.stdout + proc.stderr
    assert not (workdir / "results" / "bad").exists() and not (workdir / "logs" / "bad").exists()
