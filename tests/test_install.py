"""The package as a user installs it: `pip install .` (not editable) holds everything lionflow reads at
run time (schemas, the student's chat template: package data), and the workflow runs with that copy
from a directory of its own that has the workflow files but no src/."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lionflow.artifacts import read_json, read_jsonl

from conftest import ROOT

pytestmark = pytest.mark.slow

WORKFLOW = ("Snakefile", "rules", "workflow", "config", "resources", "profiles")
TARGET = "results/micro/iter1/hard.jsonl"   # teacher, base student (chat template), training, referee, split


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout


def test_a_non_editable_install_runs_the_micro_config_from_another_directory(tmp_path):
    # Build from a copy of the project, so that nothing (build/, egg-info) is written into the checkout.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--no-compile", "--target", str(site), str(project)], cwd=tmp_path, env=os.environ)
    assert (site / "lionflow" / "student" / "chat_template.jinja").is_file()
    assert len(list((site / "lionflow" / "schemas").glob("*.json"))) >= 10
    shutil.rmtree(project)

    # The workflow files alone, elsewhere; the installed copy first on the path, the checkout's src/ nowhere.
    wd = tmp_path / "run"
    wd.mkdir()
    for name in WORKFLOW:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, wd / name)
    shutil.copytree(ROOT / "tests" / "micro", wd / "tests" / "micro")
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    where = run([sys.executable, "-c", "import lionflow; print(lionflow.__file__)"], cwd=wd, env=env).strip()
    assert Path(where).is_relative_to(site) and not Path(where).is_relative_to(ROOT / "src"), where

    snakemake = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tests/micro/config.yaml"]
    assert "summarize_run" in run(snakemake + ["-n", "--quiet", "rules"], cwd=wd, env=env)
    run([*snakemake[:3], TARGET, *snakemake[3:]], cwd=wd, env=env)
    hard = read_jsonl(wd / TARGET, "scored_instruction")
    easy = read_jsonl(wd / "results/micro/iter1/easy.jsonl", "scored_instruction")
    assert hard and len(hard) + len(easy) == len(read_jsonl(wd / "results/micro/iter1/cache_pool.jsonl",
                                                            "instruction"))
    # The base student got the Alpaca template from the installed package data; the teacher was the oracle,
    # reached in-process through the transport lionflow.smk gives the client.
    template = (site / "lionflow" / "student" / "chat_template.jinja").read_text()
    assert (wd / "results/micro/base_student/chat_template.jinja").read_text().strip() == template.strip()
    paid = sum(read_json(wd / f"results/micro/iter1/llm_stats/teacher_{pool}.json", "llm_stats")["paid"]
               for pool in ("train", "cache"))
    assert paid == len(hard) + len(easy)   # the micro run's iteration-1 pools are the same 18 instructions
